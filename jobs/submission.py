"""Accepting work from a client (the HTTP API or the CLI): validate the request against the
limits, write the rows, and leave the enqueue to after the commit. Idempotency lives here so the
API and the CLI behave the same."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Job, Voice
from jobs import lifecycle, models
from jobs.engine import SynthesisParams
from jobs.errors import JobError
from jobs.keys import voice_object_key
from jobs.runtime import Runtime
from jobs.states import VoiceStatus
from jobs.tenants import Identity

LANGUAGES = ("auto", "zh", "en", "ja")
OUTPUT_FORMATS = ("wav", "wav24", "flac", "mp3", "opus", "m4a")
SAMPLE_RATES = (16000, 22050, 24000, 32000, 44100, 48000)
NATIVE_RATE = 32000  # what the SoVITS decoder produces
# Opus carries only these rates; every other format carries all of SAMPLE_RATES.
FORMAT_RATES = {"opus": (16000, 24000, 48000)}
SPLIT_METHODS = ("sentences", "none", "every_4_sentences", "about_50_chars", "chinese_period", "english_period", "punctuation")


class RequestRejected(JobError):
    """A client request that cannot be accepted; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code)
        self.status = status
        self.headers = headers


@dataclass(frozen=True)
class JobRequest:
    text: str
    voice_id: uuid.UUID
    language: str = "auto"
    output_format: str = "wav"
    sample_rate: int | None = None  # None: the native 32 kHz, or 48 kHz for Opus
    split_method: str = "sentences"
    params: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    model: str | None = None  # a registered model by name; None: the voice's (or the default)
    model_selection: str | None = None  # the api_v2 choice of weights to apply (jobs.models.selector)

    def fingerprint(self) -> str:
        material = json.dumps({**asdict(self), "voice_id": str(self.voice_id)}, sort_keys=True, default=str)
        return hashlib.sha256(material.encode()).hexdigest()


def submit_job(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    request: JobRequest,
    idempotency_key: str | None = None,
    job_id: uuid.UUID | None = None,
    caller: Identity | None = None,
) -> tuple[Job, bool]:
    """Returns (job, created). The job is admitted by ``jobs.limits.admit_job`` for ``caller``
    (default: the tenant itself, as the CLI submits). A repeated idempotency key with the same request returns the
    first job; with a different request it is refused. ``job_id`` names the new row in advance
    (``jobs.sync`` follows a job whose stages run inline before this returns)."""
    settings = runtime.settings
    if not request.text.strip():
        raise RequestRejected(422, "empty_text", "text is empty")
    check_storable(request.text, "invalid_text", "text")
    if len(request.text) > settings.max_text_chars:
        raise RequestRejected(
            413, "text_too_long", f"text has {len(request.text)} characters; the limit is {settings.max_text_chars}"
        )
    allowed_rates = FORMAT_RATES.get(request.output_format, SAMPLE_RATES)
    sample_rate = request.sample_rate or (NATIVE_RATE if NATIVE_RATE in allowed_rates else max(allowed_rates))
    if sample_rate not in allowed_rates:
        raise RequestRejected(
            422,
            "sample_rate_unsupported",
            f"{request.output_format} carries {', '.join(map(str, allowed_rates))} Hz, not {sample_rate}",
        )
    fingerprint = request.fingerprint()
    try:
        with runtime.transaction() as session:
            if idempotency_key:
                existing = job_for_idempotency_key(session, tenant_id, idempotency_key)
                if existing is not None:
                    return replay(existing, fingerprint), False
            voice = session.get(Voice, request.voice_id)
            if voice is None or voice.tenant_id != tenant_id or voice.status == VoiceStatus.DELETED.value:
                raise RequestRejected(404, "voice_not_found", f"no voice {request.voice_id}")
            if voice.status == VoiceStatus.FAILED.value:
                raise RequestRejected(
                    409, "voice_unavailable", f"voice {voice.id} failed processing: {voice.failure_code}"
                )
            from jobs.limits import admit_job

            try:
                model = models.resolve(session, settings, voice, request.model, request.model_selection)
            except models.ModelError as exc:
                raise RequestRejected(exc.status, exc.code, exc.message) from None
            admit_job(runtime, session, caller or Identity(tenant_id), len(request.text), request.callback_url)
            job = lifecycle.create_job(
                session,
                runtime,
                tenant_id=tenant_id,
                voice_id=voice.id,
                text=request.text,
                language=request.language,
                split_method=request.split_method,
                params=SynthesisParams.from_dict(request.params).as_dict(),
                output_format=request.output_format,
                sample_rate=sample_rate,
                callback_url=request.callback_url,
                idempotency_key=idempotency_key,
                request_hash=fingerprint,
                **(model.job_columns() if model is not None else {}),
                **({"id": job_id} if job_id else {}),
            )
        return job, True
    except IntegrityError:
        existing = race_winner(runtime, tenant_id, idempotency_key)
        if existing is None:
            raise
        return replay(existing, fingerprint), False


def unstorable_reason(value: str) -> str | None:
    """Why the database cannot hold this text, or None: PostgreSQL refuses NUL characters and
    every column is UTF-8 (a lone surrogate from a JSON escape cannot be encoded)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def check_storable(value: str, code: str, what: str) -> None:
    reason = unstorable_reason(value)
    if reason is not None:
        raise RequestRejected(422, code, f"{what} {reason}")


def job_for_idempotency_key(session: Session, tenant_id: uuid.UUID, key: str) -> Job | None:
    job: Job | None = session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))
    return job


def race_winner(runtime: Runtime, tenant_id: uuid.UUID, idempotency_key: str | None) -> Job | None:
    """After an insert failed on a unique constraint: the job of another request with the same
    idempotency key that committed first, or None when that is not what happened."""
    if not idempotency_key:
        return None
    with runtime.transaction() as session:
        return job_for_idempotency_key(session, tenant_id, idempotency_key)


def replay(job: Job, fingerprint: str) -> Job:
    """The job a repeated Idempotency-Key names, if it was for the same request."""
    if job.request_hash != fingerprint:
        raise RequestRejected(409, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
    return job


def submit_voice(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    name: str,
    language: str,
    transcript: str | None,
    references: bytes,
    analysis: dict[str, Any],
    model_id: uuid.UUID | None = None,
) -> Voice:
    """Store the (already validated) reference clips, then the row; processing is enqueued after
    the commit. If the row cannot be written the stored object is removed again."""
    voice_id = uuid.uuid4()
    upload_key = voice_object_key(tenant_id, voice_id, "references.npz")
    runtime.storage.put(upload_key, references, "application/octet-stream")
    try:
        with runtime.transaction() as session:
            return lifecycle.create_voice(
                session,
                runtime,
                tenant_id,
                name,
                language,
                transcript,
                upload_key,
                analysis,
                voice_id=voice_id,
                model_id=model_id,
            )
    except BaseException:
        runtime.storage.delete(upload_key)
        raise
