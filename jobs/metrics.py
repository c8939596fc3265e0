"""Every Prometheus metric voxmill exports, defined here and only here, with the helpers that
record them. The API serves them at ``/metrics``; each worker pool (one process: solo or threads)
serves them from its own exporter (``start_worker_exporter``). ``infra/grafana/`` and
``infra/prometheus/`` read these names.

State changes are counted from ``jobs.lifecycle`` once their transaction has committed
(``observe_after_commit``), so a rolled-back change is never counted. Queue depth is read from the
broker at scrape time (API only: every pool would report the same numbers); GPU utilisation and
memory come from NVML at scrape time, in processes where NVML finds a GPU (none: no GPU series).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from jobs.runtime import Runtime

log = logging.getLogger("voxmill.metrics")

OBSERVERS = "voxmill_after_commit_observers"
# Per-pool exporter ports when VOXMILL_METRICS_PORT is unset (infra/prometheus/ scrapes these).
DEFAULT_WORKER_PORTS = {"gpt": 9101, "sovits": 9102, "post": 9103}

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# --------------------------------------------------------------------------- latency

STAGE_SECONDS = Histogram(
    "voxmill_stage_duration_seconds",
    "Time a task spent on its work, by stage (plan, gpt, sovits, post, assemble, voice, webhook).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_WAIT_SECONDS = Histogram(
    "voxmill_stage_wait_seconds",
    "Time a segment waited between its previous state change and a worker claiming the stage.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
JOB_SECONDS = Histogram(
    "voxmill_job_duration_seconds",
    "End-to-end latency: job submitted to its terminal state, by that state.",
    ["status"],
    buckets=(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0),
)
HTTP_SECONDS = Histogram(
    "voxmill_http_request_duration_seconds",
    "API request latency by method, route template and status code.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# --------------------------------------------------------------------------- outcomes

RATE_LIMIT_STORE_ERRORS = Counter(
    "voxmill_rate_limit_store_errors",
    "Rate-limit checks that could not reach Redis, by what the request got "
    "(admitted: VOXMILL_RATE_LIMIT_ON_REDIS_ERROR=open; refused: closed).",
    ["outcome"],
)

JOBS_SUBMITTED = Counter("voxmill_jobs_submitted", "Jobs accepted (rows committed).")
JOBS_FINISHED = Counter("voxmill_jobs_finished", "Jobs that reached a terminal state.", ["status"])
SEGMENTS_FINISHED = Counter(
    "voxmill_segments_finished", "Segments that reached a terminal state.", ["status"]
)
SEGMENT_RERENDERS = Counter(
    "voxmill_segment_rerenders", "Renders the quality gate rejected and sent back to be re-rendered."
)
TASK_RETRIES = Counter(
    "voxmill_task_retries", "Tasks retried after a transient error, by task and error type.", ["task", "reason"]
)
# Defined here for the segment cache (L1 in-process, L2 the persistent index) to increment with
# cache_hit/cache_miss; the voice-features cache of jobs.voices counts as cache="voice_features".
CACHE_REQUESTS = Counter(
    "voxmill_cache_requests",
    "Cache look-ups by cache (render_l1, render_l2, voice_features) and result (hit / miss / stale).",
    ["cache", "result"],
)

# --------------------------------------------------------------------------- quality

QUALITY_RENDERS = Counter(
    "voxmill_quality_renders",
    "Renders scored by the quality gate, by verdict (passed / failed / unscored).",
    ["result"],
)
T2S_STOPS = Counter(
    "voxmill_t2s_stops",
    "T2S generations by how they stopped: eos (by itself), cap (ran into the token cap), unknown.",
    ["reason"],
)
DNSMOS = Histogram(
    "voxmill_segment_dnsmos",
    "DNSMOS P.835 scores of each scored render (score: sig, bak, ovrl, p808).",
    ["score"],
    buckets=(1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.5, 5.0),
)
SIMILARITY = Histogram(
    "voxmill_segment_speaker_similarity",
    "Cosine similarity of each scored render's d-vector to its voice.",
    buckets=(0.0, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0),
)


# --------------------------------------------------------------------------- recording


def observe_after_commit(session: Session, observe: Callable[[], None]) -> None:
    """Record a metric once the session's transaction commits (``Runtime.transaction`` runs
    these after the enqueue callbacks); dropped with a rollback."""
    session.info.setdefault(OBSERVERS, []).append(observe)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the block's duration in ``voxmill_stage_duration_seconds``, errors included."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)


def job_finished(status: str, seconds: float | None) -> None:
    JOBS_FINISHED.labels(status).inc()
    if seconds is not None:
        JOB_SECONDS.labels(status).observe(max(0.0, seconds))


def render_scored(verdict: str, dnsmos: dict[str, float] | None, similarity: float | None) -> None:
    QUALITY_RENDERS.labels(verdict).inc()
    for name, value in (dnsmos or {}).items():
        DNSMOS.labels(name).observe(value)
    if similarity is not None:
        SIMILARITY.observe(similarity)


def cache_result(cache: str, result: str) -> None:
    CACHE_REQUESTS.labels(cache, result).inc()


def cache_hit(cache: str) -> None:
    cache_result(cache, "hit")


def cache_miss(cache: str) -> None:
    cache_result(cache, "miss")


# --------------------------------------------------------------------------- scrape-time collectors


class QueueDepthCollector(Collector):
    """``voxmill_queue_depth{queue}``: ready messages per queue, asked of the broker at scrape
    time. An unreachable broker gives no samples (and a log line), never a slow or failed scrape."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("voxmill_queue_depth", "Messages waiting in each queue.", labels=["queue"])
        try:
            for queue, depth in queue_depths(self.runtime).items():
                family.add_metric([queue], depth)
        except Exception as exc:  # a scrape must not fail because the broker did
            log.warning("queue depth unavailable: %s", exc)
            return
        yield family


def queue_depths(runtime: "Runtime") -> dict[str, int]:
    """Ready messages per queue, asked of the broker.

    Not a passive declare: with Redis an empty queue has no key, so a passive declare answers
    NOT_FOUND, and under a ``global_keyprefix`` kombu checks the unprefixed key and answers
    NOT_FOUND for every queue. Re-declaring Celery's own queue objects is a no-op on Redis and,
    on AMQP, matches the existing declaration argument for argument."""
    depths: dict[str, int] = {}
    with runtime.celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0.5, interval_step=0.5, timeout=2)
        channel = connection.channel()
        try:
            for queue in runtime.celery.conf.task_queues:
                depths[queue.name] = queue.bind(channel).queue_declare().message_count
        finally:
            channel.close()
    return depths


class GpuCollector(Collector):
    """GPU utilisation and memory through NVML (``nvidia-ml-py``). Without the library, a driver or
    a GPU, NVML fails to start once and the collector yields nothing from then on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._tried = False

    def _init(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    if pynvml.nvmlDeviceGetCount() > 0:
                        self._nvml = pynvml
                except Exception as exc:  # no library, no driver, no device: no GPU metrics
                    log.info("no GPU metrics: %s", exc)
            return self._nvml

    @property
    def available(self) -> bool:
        return self._init() is not None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._init()
        if nvml is None:
            return
        util = GaugeMetricFamily("voxmill_gpu_utilization_ratio", "GPU busy fraction (NVML).", labels=["gpu"])
        used = GaugeMetricFamily("voxmill_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"])
        total = GaugeMetricFamily("voxmill_gpu_memory_total_bytes", "GPU memory (NVML).", labels=["gpu"])
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util.add_metric([str(index)], rates.gpu / 100.0)
                used.add_metric([str(index)], float(memory.used))
                total.add_metric([str(index)], float(memory.total))
        except Exception as exc:
            log.warning("NVML read failed: %s", exc)
            return
        yield from (util, used, total)


_gpu_collector: GpuCollector | None = None
_gpu_lock = threading.Lock()


def gpu_collector() -> GpuCollector:
    """The process's GPU collector, registered on the default registry on first call."""
    global _gpu_collector
    with _gpu_lock:
        if _gpu_collector is None:
            _gpu_collector = GpuCollector()
            REGISTRY.register(_gpu_collector)
        return _gpu_collector


# --------------------------------------------------------------------------- exposition


def worker_port(queue: str, configured: int | None) -> int:
    return DEFAULT_WORKER_PORTS[queue] if configured is None else configured


def start_worker_exporter(queue: str, port: int, addr: str) -> int | None:
    """Serve the default registry (plus GPU metrics) over HTTP from this worker process. A port
    already taken is logged and the worker runs on without an exporter: metrics are not worth a
    pool that will not start."""
    if port == 0:
        return None
    from prometheus_client import start_http_server

    gpu_collector()
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        log.error("metrics exporter for the %s pool not started on %s:%d: %s", queue, addr, port, exc)
        return None
    log.info("metrics exporter listening", extra={"fields": {"queue": queue, "addr": addr, "port": port}})
    return port


def api_registry(runtime: "Runtime") -> CollectorRegistry:
    """The API's own scrape-time collectors (queue depth, in distributed mode); served after the
    default registry so that several apps in one process never register twice."""
    registry = CollectorRegistry(auto_describe=False)
    if not runtime.settings.embedded:
        registry.register(QueueDepthCollector(runtime))
    return registry


def exposition(*registries: CollectorRegistry) -> bytes:
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))
