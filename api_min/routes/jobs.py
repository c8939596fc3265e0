"""Jobs: submit, status, audio, cancel."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from api_min.deps import Caller, RuntimeDep, TenantId
from api_min.errors import ApiError
from api_min.routes.books import chapter_progress, is_reused
from api_min.schemas import (
    ArtifactOut,
    ErrorDetail,
    JobIn,
    JobOut,
    ModelUsed,
    Progress,
    QualityOut,
    RenderOut,
    ScoresOut,
    SegmentOut,
    WebhookAttemptOut,
    WebhookDeliveryOut,
)
from db.models import (
    Artifact,
    Job,
    RenderAttempt,
    Segment,
    WebhookAttempt,
    WebhookDelivery,
)
from jobs import lifecycle
from jobs.engine import stop_reason_of
from jobs.runtime import Runtime
from jobs.states import JobStatus
from jobs.storage import ObjectNotFound
from jobs.submission import JobRequest, submit_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def load_job(session: Any, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    job: Job | None = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:  # another tenant's id: 404, never 403
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


def _error(code: str | None, message: str | None) -> ErrorDetail | None:
    return ErrorDetail(code=code, message=message or "") if code else None


def job_out(runtime: Runtime, job_id: uuid.UUID, tenant_id: uuid.UUID) -> JobOut:
    with runtime.transaction() as session:
        job = load_job(session, tenant_id, job_id)
        segments = session.scalars(select(Segment).where(Segment.job_id == job_id).order_by(Segment.index)).all()
        index_of = {s.id: s.index for s in segments}
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        deliveries = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.created_at)
        ).all()
        attempts = session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.number)
        ).all() if deliveries else []
        renders = session.scalars(
            select(RenderAttempt).where(RenderAttempt.job_id == job_id).order_by(RenderAttempt.attempt)
        ).all()
        renders_of: dict[uuid.UUID, list[RenderOut]] = {}
        for r in renders:
            renders_of.setdefault(r.segment_id, []).append(_render_out(r))
        total = job.segments_total
        return JobOut(
            id=job.id,
            status=job.status,
            voice_id=job.voice_id,
            language=job.language,
            format=job.output_format,
            sample_rate=job.sample_rate,
            model_version=job.model_version,
            model=(
                ModelUsed(
                    name=job.model_name,
                    generation=job.model_generation or "",
                    gpt_sha256=job.model_gpt_sha256 or "",
                    sovits_sha256=job.model_sovits_sha256 or "",
                )
                if job.model_name
                else None
            ),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=Progress(
                segments_total=total,
                segments_done=job.segments_done,
                segments_failed=job.segments_failed,
                fraction=(job.segments_done / total) if total else 0.0,
                segments_reused=sum(1 for s in segments if is_reused(s)),
            ),
            error=_error(job.error_code, job.error_message),
            audio_url=f"/v1/jobs/{job.id}/audio" if job.status == JobStatus.SUCCEEDED.value else None,
            segments=[
                SegmentOut(
                    index=s.index,
                    status=s.status,
                    attempts=s.total_attempts,
                    duration_s=s.duration_s,
                    error=_error(s.error_code, s.error_message),
                    chapter=s.chapter,
                    reused=is_reused(s),
                    quality_passed=s.quality_passed,
                    quality_verdict=_verdict(s.quality_verdict),
                    stop_reason=stop_reason_of(s.stop_reason),
                    scores=_scores_out(s.quality_scores),
                    renders=renders_of.get(s.id, []),
                )
                for s in segments
            ],
            artifacts=[
                ArtifactOut(
                    kind=a.kind,
                    segment_index=index_of.get(a.segment_id) if a.segment_id else None,
                    key=a.storage_key,
                    size_bytes=a.size_bytes,
                    sha256=a.sha256,
                    content_type=a.content_type,
                )
                for a in artifacts
            ],
            webhook_deliveries=[
                WebhookDeliveryOut(
                    id=d.id,
                    event=d.event,
                    url=d.url,
                    status=d.status,
                    attempts=d.attempts,
                    next_attempt_at=d.next_attempt_at,
                    delivered_at=d.delivered_at,
                    last_status_code=d.last_status_code,
                    last_error=d.last_error,
                    history=[
                        WebhookAttemptOut(
                            number=a.number,
                            started_at=a.started_at,
                            duration_ms=a.duration_ms,
                            status_code=a.status_code,
                            error=a.error,
                            succeeded=a.succeeded,
                        )
                        for a in attempts
                        if a.delivery_id == d.id
                    ],
                )
                for d in deliveries
            ],
            project_id=job.project_id,
            chapters=chapter_progress(job, segments),
            quality=QualityOut(
                segments_scored=len(renders_of),
                segments_rerendered=sum(1 for rs in renders_of.values() if len(rs) > 1),
                segments_below_gate=[s.index for s in segments if s.quality_passed is False],
                segments_unscored=[s.index for s in segments if s.quality_verdict == "unscored"],
                segments_t2s_cap=[s.index for s in segments if s.stop_reason == "cap"],
            ),
        )


Verdict = Literal["passed", "failed", "unscored"]
_VERDICTS: dict[str | None, Verdict] = {"passed": "passed", "failed": "failed", "unscored": "unscored"}


def _verdict(value: str | None) -> Verdict | None:
    return _VERDICTS.get(value)


def _scores_out(scores: dict[str, Any] | None) -> ScoresOut | None:
    if scores is None:
        return None
    return ScoresOut(
        dnsmos=scores.get("dnsmos"),
        similarity=scores.get("similarity"),
        failures=list(scores.get("failures") or []),
        notes=list(scores.get("notes") or []),
        unscored=list(scores.get("unscored") or []),
    )


def _render_out(r: RenderAttempt) -> RenderOut:
    scores = {"sig": r.dnsmos_sig, "bak": r.dnsmos_bak, "ovrl": r.dnsmos_ovrl, "p808": r.dnsmos_p808}
    return RenderOut(
        attempt=r.attempt,
        seed=r.seed,
        dnsmos={k: v for k, v in scores.items() if v is not None} if r.dnsmos_ovrl is not None else None,
        similarity=r.similarity,
        passed=r.passed,
        verdict=_verdict(r.verdict) or ("passed" if r.passed else "failed"),
        stop_reason=stop_reason_of(r.stop_reason),
        failures=list(r.failures),
        notes=list(r.notes),
    )


@router.post("", status_code=202, response_model=JobOut)
def create_job(
    body: JobIn,
    caller: Caller,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobOut:
    """Submit text to render in a voice. Returns at once; poll the job or pass a callback_url."""
    tenant_id = caller.tenant_id
    request = JobRequest(
        text=body.text,
        voice_id=body.voice_id,
        language=body.language,
        output_format=body.format,
        sample_rate=body.sample_rate,
        split_method=body.split,
        params=body.params.model_dump(),
        callback_url=body.callback_url,
        model=body.model,
    )
    job, created = submit_job(runtime, tenant_id, request, idempotency_key, caller=caller)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return job_out(runtime, job.id, tenant_id)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: uuid.UUID, tenant_id: TenantId, runtime: RuntimeDep) -> JobOut:
    """Status, progress, segments, stored artifacts and webhook deliveries of a job."""
    return job_out(runtime, job_id, tenant_id)


@router.get(
    "/{job_id}/audio",
    response_class=Response,
    responses={200: {"content": {"audio/*": {}}, "description": "The job's audio."}},
)
def get_job_audio(job_id: uuid.UUID, tenant_id: TenantId, runtime: RuntimeDep, redirect: bool = False) -> Response:
    """The finished audio; with ``redirect=true`` a redirect to a presigned URL (S3)."""
    with runtime.transaction() as session:
        job = load_job(session, tenant_id, job_id)
        if job.status != JobStatus.SUCCEEDED.value:
            raise ApiError(409, "job_not_finished", f"job {job_id} is {job.status}")
        artifact = session.scalar(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.segment_id.is_(None), Artifact.kind == "audio")
        )
    if artifact is None:
        raise ApiError(404, "audio_not_found", f"job {job_id} has no stored audio")
    extension = artifact.storage_key.rsplit(".", 1)[-1]
    return serve_artifact(runtime, artifact, f"{job_id}.{extension}", "audio_not_found", redirect)


def serve_artifact(runtime: Runtime, artifact: Artifact, filename: str, missing_code: str, redirect: bool) -> Response:
    """A stored file as the response body, or a redirect to a presigned URL when asked (S3)."""
    if redirect:
        url = runtime.storage.presigned_url(artifact.storage_key, runtime.settings.s3_presign_expiry_s)
        if url:
            return RedirectResponse(url, status_code=307)
    try:
        data = runtime.storage.get(artifact.storage_key)
    except ObjectNotFound:
        raise ApiError(404, missing_code, f"{filename} is missing from storage") from None
    return Response(
        data,
        media_type=artifact.content_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "ETag": f'"{artifact.sha256}"'},
    )


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: uuid.UUID, tenant_id: TenantId, runtime: RuntimeDep) -> JobOut:
    """Cancel a job that has not finished. Segments already rendered are kept."""
    with runtime.transaction() as session:
        job = load_job(session, tenant_id, job_id)
        if not lifecycle.cancel_job(session, runtime, job.id):
            raise ApiError(409, "job_already_finished", f"job {job_id} is already {job.status}")
    return job_out(runtime, job_id, tenant_id)
