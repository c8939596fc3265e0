"""The one place configuration is read: ``VOXMILL_*`` environment variables (and an optional
``.env``) into a typed ``Settings``. Nothing else in voxmill reads the environment."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


DEFAULT_WEBHOOK_SECRET = "change-me"


class Settings(BaseSettings):
    """Everything a voxmill process needs to know. Defaults give the embedded mode: SQLite and a
    local folder under ``home``, every stage run in-process, no servers."""

    model_config = SettingsConfigDict(env_prefix="VOXMILL_", env_file=None, extra="ignore")

    mode: Literal["embedded", "distributed"] = "embedded"
    home: Path = Path("var")

    # Database: PostgreSQL in production, SQLite (under home) for the embedded default.
    database_url: str | None = None
    database_pool_size: int = 5
    database_connect_timeout_s: int = 5
    # A connection to a PostgreSQL that stopped answering (partition) fails after about this long.
    database_tcp_timeout_s: int = 15
    # A worker's state write (claim, completion, webhook attempt) is retried in-process this
    # long while the database is unreachable, so finished work is recorded, not redone.
    db_retry_deadline_s: float = 60.0
    db_retry_backoff_s: float = 0.5

    # Broker (distributed mode only). Redis is the supported broker; RabbitMQ works through kombu.
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Must exceed the longest task (acks_late): an unacked message is redelivered after this long.
    # It must also exceed task_time_limit_s and the longest retry countdown: a message held by a
    # live worker longer than this is delivered a second time, and the redelivered copy takes
    # the segment over (it cannot tell a slow worker from a dead one), so the work is done twice.
    broker_visibility_timeout_s: int = 3600
    # Prefix for every broker key in Redis: several deployments (or test runs) can share a server.
    broker_key_prefix: str = ""
    # How often a worker looks for unacked messages older than the visibility timeout (a dead
    # worker's) and puts them back; kombu's own default scans only every 100 s.
    broker_restore_interval_s: int = 10
    # A publish waits at most (1 + retries) x socket timeout when the broker is half-open; the
    # API then answers anyway (the committed row is the outbox) instead of hanging.
    broker_socket_timeout_s: float = 5.0
    broker_connect_timeout_s: float = 3.0
    broker_publish_retries: int = 1
    # After a failed after-commit publish, skip publishing this long (the sweeper sends it):
    # one request per window pays the broker timeout, not every request.
    broker_outage_backoff_s: float = 5.0

    # Object storage: a local folder (embedded) or any S3-speaking endpoint.
    storage: Literal["local", "s3"] = "local"
    storage_dir: Path | None = None
    s3_bucket: str = "voxmill"
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_presign_expiry_s: int = 3600
    # Storage calls are retried with backoff this long (an outage or a failed verification)
    # before the stage gives up its attempt.
    storage_retry_deadline_s: float = 60.0
    storage_retry_backoff_s: float = 0.5

    # Engine: "gpt-sovits" (the product) or a module exposing create_semantic_engine,
    # create_acoustic_engine and create_voice_encoder (tests use a deterministic one).
    engine: str = "gpt-sovits"
    engine_options_json: str = "{}"
    models_dir: Path | None = None
    # Fine-tuned weights instead of the official ones under models_dir.
    gpt_checkpoint: Path | None = None
    sovits_checkpoint: Path | None = None
    # Registered models (jobs/models.py): the name of the deployment-wide model that voices
    # without a model of their own speak with; None (or nothing registered under it): the files
    # above. Each worker process keeps the models its jobs name loaded in an LRU bounded by
    # count and by resident weight bytes (one pool holds one half of a pair: the gpt pool the
    # T2S weights, the sovits pool the SoVITS weights); the least recently used is dropped first.
    default_model: str | None = None
    model_cache_max_models: int = 4
    model_cache_max_bytes: int = 2 * 1024 * 1024 * 1024
    t2s_batch_size: int = 8
    # Batching across jobs in the gpt pool (jobs/batching.py): a worker runs twice this many
    # threads, each holding one message, and renders up to this many ready segments together in
    # one batched T2S; 1 = off (one segment per task). A batch waits at most batch_wait_ms for more segments
    # after its first arrived, so a lone segment is delayed by that much at most.
    gpt_batch_size: int = 1
    batch_wait_ms: float = 30.0
    device: str = "cpu"
    precision: Literal["fp32", "fp16"] = "fp32"
    # T2S decode steps: "onnx" runs them in ONNX Runtime with the KV cache bound in place
    # (workers/gpt/model/onnx_step.py), "torch" in eager torch. "auto": onnx on CPU, torch on GPU.
    t2s_runtime: Literal["auto", "torch", "onnx"] = "auto"
    # Opt-in: int8 dynamic quantization of the ONNX T2S step (fp32 models only). It changes the
    # tokens a little; bench/render.py prints agreement and distances against fp32.
    t2s_quantize: Literal["none", "int8"] = "none"
    # SoVITS decoder: ONNX Runtime (CPU default; within 1e-4 of torch, faster) or torch. Speeds
    # other than 1 always run in torch. "auto": onnx on CPU, torch on GPU.
    sovits_runtime: Literal["auto", "torch", "onnx"] = "auto"

    # Task policy.
    task_max_attempts: int = 5
    task_retry_backoff_s: float = 2.0
    task_retry_backoff_max_s: float = 300.0
    task_soft_time_limit_s: int = 600
    task_time_limit_s: int = 660
    # A worker whose resident memory passes this finishes its task and exits, to be restarted
    # by its supervisor (systemd Restart=always); 0: never. Prefork children are recycled by
    # Celery itself; solo and thread pools by jobs.recycling.
    worker_max_memory_per_child_kb: int = 0
    # The sweeper re-enqueues waiting work untouched this long while its queue is empty.
    sweep_stale_after_s: float = 120.0
    # How often beat runs the sweeper.
    sweep_interval_s: float = 30.0

    # Input limits.
    max_text_chars: int = 200_000
    segment_max_chars: int = 300
    max_upload_bytes: int = 50 * 1024 * 1024

    # Books (jobs.books): the largest source accepted, and the default pauses in seconds.
    max_book_bytes: int = 50 * 1024 * 1024
    book_pause_sentence_s: float = 0.3
    book_pause_paragraph_s: float = 0.8
    book_pause_chapter_s: float = 2.0
    # Render cache (jobs.cache): L1 is per process, for phrases of at most l1_max_chars.
    cache_l1_entries: int = 4096
    cache_l1_max_chars: int = 200
    cache_l1_max_bytes: int = 64 * 1024 * 1024
    # Projects (jobs.projects): how often beat looks for due or stale projects.
    projects_check_every_s: float = 60.0

    # Webhooks. Distributed processes (api, worker, beat) refuse to start with the default.
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    webhook_max_attempts: int = 8
    webhook_backoff_base_s: float = 2.0
    webhook_backoff_max_s: float = 600.0
    webhook_timeout_s: float = 10.0

    # API.
    auth_required: bool = False
    public_base_url: str = "http://127.0.0.1:8000"

    # Quality gate (post stage). Every finished segment is scored: DNSMOS P.835 overall and the
    # speaker similarity (resemblyzer d-vector cosine) to its voice. "enforce" re-renders a segment
    # below either threshold with a new seed, up to quality_max_rerenders more times, and the job
    # reports the segments that never passed; "score" records scores only; "off" skips scoring.
    # Clean GPT-SoVITS v2 speech scores DNSMOS OVRL about 3.0-3.5 and similarity 0.75-0.9 to its
    # reference; noise, silence, garbled or wrong-speaker renders fall well under these.
    quality_gate: Literal["off", "score", "enforce"] = "enforce"
    quality_min_dnsmos_ovrl: float = 2.5
    quality_min_similarity: float = 0.65
    quality_max_rerenders: int = 2
    # The front door (jobs/limits.py, jobs/breaker.py, jobs/callbacks.py). Rate limits live in
    # Redis and are off in embedded mode; 0 turns a limit off.
    rate_limit_requests_per_s: float = 50.0  # per API key (per tenant when auth is off)
    rate_limit_burst: int = 100
    rate_limit_chars_per_min: int = 600_000  # characters of text submitted per key per minute
    redis_url: str | None = None  # for the limits; default: the broker URL
    # When Redis cannot answer a rate-limit check: "open" admits the request, "closed" answers
    # 503 rate_limits_unavailable. Either way a warning is logged and
    # voxmill_rate_limit_store_errors_total counts it. Open by default: the limits protect the
    # workers, and a Redis that is the broker being down stops the workers anyway.
    rate_limit_on_redis_error: Literal["open", "closed"] = "open"
    max_queued_jobs_per_tenant: int = 1000  # unfinished jobs; tenants.max_queued_jobs overrides
    queued_jobs_retry_after_s: int = 30
    max_request_bytes: int = 4 * 1024 * 1024  # any body but a voice or book upload
    # The whole request body must arrive within this long of its headers (408 request_timeout
    # after it; 0: no deadline). 120 s carries a 50 MiB upload at about 3.5 Mbit/s.
    request_body_timeout_s: float = 120.0
    # Circuit breaker for sync requests: open when the sovits queue holds more ready messages than
    # this, or when over breaker_window_s at least breaker_min_samples sovits attempts ended and
    # more than breaker_max_error_rate of them failed or were retried. Open for breaker_cooldown_s.
    breaker_max_queue_depth: int = 200
    breaker_max_error_rate: float = 0.5
    breaker_min_samples: int = 20
    breaker_window_s: float = 120.0
    breaker_cooldown_s: float = 15.0
    breaker_check_interval_s: float = 2.0
    # Callback URLs: https only, public addresses only, unless allowed here.
    callback_allow_http: bool = False
    callback_allowed_networks: str = ""  # comma-separated CIDRs exempt from the address check
    callback_resolve: str = ""  # "host=ip,host=ip": pin names to addresses (like curl --resolve)
    # Synchronous endpoints (POST /v1/tts, POST /v1/audio/speech): a short text rendered as an
    # ordinary job while the request waits; past the timeout the job is cancelled (504).
    sync_max_chars: int = 500
    sync_timeout_s: float = 60.0
    # The waiting request polls the job's rows: at the short interval after progress, backing
    # off towards the long one while nothing changes.
    sync_poll_interval_s: float = 0.05
    sync_poll_max_interval_s: float = 0.25

    # Observability.
    log_json: bool = True
    log_level: str = "INFO"
    # A worker process's Prometheus exporter: None gives 9101 / 9102 / 9103 for the gpt / sovits /
    # post pool (``voxmill worker --metrics-port`` overrides); 0 turns it off. The API serves
    # /metrics on its own port.
    metrics_port: int | None = None
    metrics_addr: str = "0.0.0.0"

    @model_validator(mode="after")
    def _fill_paths(self) -> "Settings":
        home = self.home
        if self.database_url is None:
            self.database_url = f"sqlite:///{(home / 'voxmill.db').resolve()}"
        if self.storage_dir is None:
            self.storage_dir = home / "objects"
        if self.models_dir is None:
            self.models_dir = home / "models"
        return self

    def startup_problem(self) -> str | None:
        """Why a distributed process (api, worker, beat) must not start with these settings."""
        if not self.embedded and self.webhook_secret.strip() in ("", DEFAULT_WEBHOOK_SECRET):
            return (
                "VOXMILL_WEBHOOK_SECRET is unset or the default; distributed mode signs webhooks with it, "
                "so anyone could forge them. Set it to a long random value (e.g. `openssl rand -hex 32`)."
            )
        return None

    @property
    def embedded(self) -> bool:
        return self.mode == "embedded"

    @property
    def compiled_dir(self) -> Path:
        """Where workers keep what they compile from the models (ONNX graphs): under ``home``,
        which is writable, never beside the models, which a deployment mounts read-only."""
        return self.home / "compiled"

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @cached_property
    def engine_options(self) -> dict[str, Any]:
        options = json.loads(self.engine_options_json)
        if not isinstance(options, dict):
            raise ValueError("VOXMILL_ENGINE_OPTIONS_JSON must be a JSON object")
        return options
