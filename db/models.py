"""SQLAlchemy 2 models: the single source of the schema (Alembic migrations are generated from
and checked against these). Status columns hold the values of the enums in ``jobs.states``;
rows change status only through ``jobs.lifecycle``."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both backends (SQLite hands back naive datetimes)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType}


class Tenant(Base):
    """A customer account: owns voices, jobs, artifacts and API keys."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(200))
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A bearer key of a tenant, stored as a SHA-256 hash; the prefix is shown to people."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Voice(Base):
    """A cloned voice: the uploaded reference and, once processed, its features."""

    __tablename__ = "voices"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(24))
    language: Mapped[str] = mapped_column(String(8))
    transcript: Mapped[str | None] = mapped_column(Text)
    upload_key: Mapped[str | None] = mapped_column(String(512))
    features_key: Mapped[str | None] = mapped_column(String(512))
    model_version: Mapped[str | None] = mapped_column(String(64))
    analysis: Mapped[dict[str, Any] | None]
    # The registered model the voice speaks with (``jobs.models``); None: the deployment default.
    model_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("models.id"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A named GPT + SoVITS pair (``jobs.models``): a tenant's own (``tenant_id``) or the whole
    deployment's (``tenant_id`` None). Files are referenced by path and pinned by sha256."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        # NULLs are distinct in a unique constraint: deployment-wide names need their own index.
        Index(
            "uq_models_deployment_name",
            "name",
            unique=True,
            postgresql_where=text("tenant_id IS NULL"),
            sqlite_where=text("tenant_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    generation: Mapped[str] = mapped_column(String(16))
    gpt_path: Mapped[str] = mapped_column(String(1024))
    sovits_path: Mapped[str] = mapped_column(String(1024))
    gpt_sha256: Mapped[str] = mapped_column(String(64))
    sovits_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VoiceFeatureSet(Base):
    """A voice's features computed with one SoVITS file (style vector, prompt tokens, and for
    v2Pro/v2ProPlus the speaker embedding all come from the SoVITS weights and its generation's
    front end). Computed when a job first needs them; the voice's own ``features_key`` stays the
    default model's."""

    __tablename__ = "voice_features"
    __table_args__ = (UniqueConstraint("voice_id", "sovits_sha256"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    voice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("voices.id", ondelete="CASCADE"), index=True)
    generation: Mapped[str] = mapped_column(String(16))
    sovits_sha256: Mapped[str] = mapped_column(String(64))
    features_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelSelection(Base):
    """The GPT and SoVITS weights an API key chose through the api_v2 drop-in
    (``/set_gpt_weights``, ``/set_sovits_weights``). ``selector`` is the key's id, or
    ``tenant:<id>`` when auth is off; a choice never reaches another key."""

    __tablename__ = "model_selections"

    selector: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    gpt_model_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    sovits_model_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One synthesis request: a text in a voice, rendered as segments and assembled."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    voice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("voices.id"), index=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8))
    split_method: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    output_format: Mapped[str] = mapped_column(String(16))
    sample_rate: Mapped[int] = mapped_column(Integer)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(64))
    # The registered model the job runs on, copied at submission so the row says what rendered
    # it even after the model is removed; all None: the files under VOXMILL_MODELS_DIR.
    model_name: Mapped[str | None] = mapped_column(String(200))
    model_generation: Mapped[str | None] = mapped_column(String(16))
    model_gpt_sha256: Mapped[str | None] = mapped_column(String(64))
    model_sovits_sha256: Mapped[str | None] = mapped_column(String(64))
    model_gpt_path: Mapped[str | None] = mapped_column(String(1024))
    model_sovits_path: Mapped[str | None] = mapped_column(String(1024))
    segments_total: Mapped[int] = mapped_column(Integer, default=0)
    segments_done: Mapped[int] = mapped_column(Integer, default=0)
    segments_failed: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Books (``jobs.books``): the source is stored (text, Markdown or EPUB) and parsed at planning;
    # ``book`` holds the options (pauses, lexicon) and, once planned, the chapter titles.
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id"), index=True)
    source_key: Mapped[str | None] = mapped_column(String(512))
    source_format: Mapped[str | None] = mapped_column(String(16))
    book: Mapped[dict[str, Any] | None]


class Segment(Base):
    """One synthesis unit of a job. ``content_key`` = sha256(normalised text, voice, model
    version, synthesis params): the same input always names the same stored objects."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    content_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    total_attempts: Mapped[int] = mapped_column(Integer, default=0)
    stage_deadline_at: Mapped[datetime | None]
    semantic_key: Mapped[str | None] = mapped_column(String(512))
    waveform_key: Mapped[str | None] = mapped_column(String(512))
    audio_key: Mapped[str | None] = mapped_column(String(512))
    duration_s: Mapped[float | None] = mapped_column(Float)
    # The batched T2S run (jobs.batching) that rendered the segment's tokens, and its size;
    # NULL when the gpt pool renders one segment per task.
    gpt_batch_id: Mapped[str | None] = mapped_column(String(36))
    gpt_batch_size: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Books: the chapter it belongs to, the silence after it, and the text as written (``text``
    # is what is spoken, after the pronunciation lexicon) for subtitles.
    chapter: Mapped[int | None] = mapped_column(Integer)
    pause_after_s: Mapped[float | None] = mapped_column(Float)
    caption: Mapped[str | None] = mapped_column(Text)
    # The render in progress (1 = first); the quality gate's re-renders count up and offset the
    # seed. quality_passed: None until scored (or when scoring is off); False when the final
    # render failed the gate or could not be scored (``quality_verdict`` says which).
    render_attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    quality_passed: Mapped[bool | None] = mapped_column(Boolean)
    # The final render's verdict (passed / failed / unscored, ``jobs.quality``) and scores, also
    # for a segment reused from the render cache, which carries them over; and how its T2S
    # generation stopped (eos / cap), written by the gpt stage.
    quality_verdict: Mapped[str | None] = mapped_column(String(16))
    quality_scores: Mapped[dict[str, Any] | None]
    stop_reason: Mapped[str | None] = mapped_column(String(8))


class Project(Base):
    """A book or voice-over kept rendered: its latest source, voice and settings. Re-rendered on
    its schedule and whenever its voice or the model version changes (``jobs.projects``)."""

    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    voice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("voices.id"), index=True)
    language: Mapped[str] = mapped_column(String(8))
    output_format: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]]
    options: Mapped[dict[str, Any]]  # pauses, lexicon
    source_key: Mapped[str | None] = mapped_column(String(512))
    source_format: Mapped[str | None] = mapped_column(String(16))
    schedule_every_s: Mapped[int | None] = mapped_column(Integer)
    next_run_at: Mapped[datetime | None] = mapped_column(index=True)
    # The latest render; the project is stale when its voice or the model version differs from it.
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RenderCacheEntry(Base):
    """L2 of the render cache (``jobs.cache``): one finished, verified segment render per
    (tenant, content key). A table of its own rather than a query over ``segments``: segment rows
    go with their jobs (retention, deletion) while a render stays reusable, a tenant's many jobs
    would hold many copies of one key, and the unique key makes the lookup one index probe."""

    __tablename__ = "render_cache"
    __table_args__ = (UniqueConstraint("tenant_id", "content_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    content_key: Mapped[str] = mapped_column(String(64))
    audio_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(100))
    duration_s: Mapped[float | None] = mapped_column(Float)
    # The render's quality verdict and scores (None: scored with the gate off, or recorded before
    # verdicts were kept) and its T2S stop reason: a reuse carries them to the new segment.
    quality_verdict: Mapped[str | None] = mapped_column(String(16))
    quality_scores: Mapped[dict[str, Any] | None]
    stop_reason: Mapped[str | None] = mapped_column(String(8))
    hits: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)


class RenderAttempt(Base):
    """One render of a segment that reached the quality gate: its seed, its scores, the verdict.
    A redelivered post task replaces its render's row."""

    __tablename__ = "render_attempts"
    __table_args__ = (UniqueConstraint("segment_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    segment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    dnsmos_sig: Mapped[float | None] = mapped_column(Float)
    dnsmos_bak: Mapped[float | None] = mapped_column(Float)
    dnsmos_ovrl: Mapped[float | None] = mapped_column(Float)
    dnsmos_p808: Mapped[float | None] = mapped_column(Float)
    similarity: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    # passed / failed / unscored (None: recorded before verdicts were kept; ``passed`` says it).
    verdict: Mapped[str | None] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(String(8))
    # Thresholds missed ("dnsmos_ovrl 1.21 < 2.5") and scores that could not be taken, and why.
    failures: Mapped[list[str]] = mapped_column(JSONType, default=list)
    notes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A stored object a job or segment produced, with what is needed to verify it."""

    __tablename__ = "artifacts"
    __table_args__ = (
        Index(
            "uq_artifacts_segment_kind",
            "segment_id",
            "kind",
            unique=True,
            postgresql_where=text("segment_id IS NOT NULL"),
            sqlite_where=text("segment_id IS NOT NULL"),
        ),
        Index(
            "uq_artifacts_job_kind",
            "job_id",
            "kind",
            unique=True,
            postgresql_where=text("segment_id IS NULL"),
            sqlite_where=text("segment_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    segment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    storage_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to deliver to a job's callback URL; ``id`` is the delivery id the receiver sees."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(24), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """Every HTTP attempt of a delivery, successful or not."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    succeeded: Mapped[bool] = mapped_column(Boolean)


class StateTransition(Base):
    """Audit log of every status change made by ``jobs.lifecycle`` (one row per change)."""

    __tablename__ = "state_transitions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Indexed: the sync circuit breaker (jobs/breaker.py) counts recent sovits outcomes.
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
