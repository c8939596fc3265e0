"""Books: submit a book (plain text, Markdown or EPUB) as one multipart upload, and fetch any
of a finished job's files (chapters, M4B, MP3, manifest, subtitles). Parsing happens where the
job is planned; this router only stores the bytes and writes the rows."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api_min.deps import Caller, RuntimeDep, TenantId
from api_min.errors import ApiError
from api_min.schemas import ChapterProgress, JobOut
from db.models import Artifact, Job, Segment
from jobs.books import BookRequest, submit_book
from jobs.submission import check_storable
from jobs.voice_catalog import find_voice

router = APIRouter(tags=["books"])


def is_reused(segment: Segment) -> bool:
    return segment.status == "succeeded" and segment.total_attempts == 0


def chapter_progress(job: Job, segments: Any) -> list[ChapterProgress] | None:
    """Per-chapter counts of a book job (None for a plain job or one not planned yet)."""
    if job.source_key is None or not job.book or "chapters" not in job.book:
        return None
    titles = list(job.book["chapters"])
    out: list[ChapterProgress] = []
    for index, title in enumerate(titles):
        members = [s for s in segments if s.chapter == index]
        done = sum(1 for s in members if s.status == "succeeded")
        failed = sum(1 for s in members if s.status == "failed")
        out.append(
            ChapterProgress(
                index=index,
                title=title,
                segments_total=len(members),
                segments_done=done,
                segments_failed=failed,
                fraction=done / len(members) if members else 1.0,
            )
        )
    return out


def _json_field(value: str | None, name: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"{name} is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(422, "invalid_request", f"{name} must be a JSON object")
    return parsed


@router.post("/v1/books", status_code=202, response_model=JobOut)
async def create_book(
    caller: Caller,
    runtime: RuntimeDep,
    response: Response,
    file: Annotated[UploadFile, File(description="The book: plain text, Markdown or EPUB.")],
    voice: Annotated[str, Form(description="A voice id, or the name of a ready voice.")],
    project: Annotated[str | None, Form(max_length=200, description="Default: the file's name.")] = None,
    source_format: Annotated[str | None, Form(description="text, markdown or epub; default detected.")] = None,
    language: Annotated[str, Form()] = "auto",
    format: Annotated[str, Form(description="Format of the chapter files and the job's audio.")] = "mp3",
    sample_rate: Annotated[int | None, Form()] = None,
    split: Annotated[str, Form()] = "sentences",
    params: Annotated[str | None, Form(description="Synthesis params, as in POST /v1/jobs (JSON).")] = None,
    options: Annotated[
        str | None,
        Form(description='JSON: {"pauses": {"sentence", "paragraph", "chapter"}, "lexicon": {...}, "speak_titles"}'),
    ] = None,
    callback_url: Annotated[str | None, Form(max_length=2048)] = None,
    schedule_every_s: Annotated[int | None, Form(description="Re-render the project this often.")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobOut:
    """Render a book: chapters → segments → chapter files, an M4B and an MP3 with chapter
    markers, a manifest and subtitles. Submitting the same project again supersedes its
    unfinished render and reuses every segment already rendered."""
    from api_min.routes.jobs import job_out

    tenant_id = caller.tenant_id
    fields = {
        "voice": voice, "project": project, "source_format": source_format, "language": language, "format": format,
        "split": split, "params": params, "options": options, "callback_url": callback_url, "filename": file.filename,
    }
    for name, value in fields.items():
        if value is not None:
            check_storable(value, "invalid_request", name)
    data = await file.read(runtime.settings.max_book_bytes + 1)
    with runtime.transaction() as session:
        found = find_voice(session, tenant_id, voice)
        if found is None:
            raise ApiError(404, "voice_not_found", f"no voice {voice!r}")
        voice_id = found.id
    request = BookRequest(
        source=data,
        voice_id=voice_id,
        filename=file.filename,
        source_format=source_format or None,
        project=project,
        language=language,
        output_format=format,
        sample_rate=sample_rate,
        split_method=split,
        params=_json_field(params, "params"),
        options=_json_field(options, "options"),
        callback_url=callback_url,
        schedule_every_s=schedule_every_s,
    )
    job, created = await run_in_threadpool(submit_book, runtime, tenant_id, request, idempotency_key, caller)
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return job_out(runtime, job.id, tenant_id)


@router.get(
    "/v1/jobs/{job_id}/files/{kind}",
    response_class=Response,
    responses={200: {"content": {"*/*": {}}, "description": "The stored file."}},
)
def get_job_file(
    job_id: uuid.UUID, kind: str, tenant_id: TenantId, runtime: RuntimeDep, redirect: bool = False
) -> Response:
    """One of a job's stored files by kind, as listed in its artifacts: ``audio``, ``m4b``,
    ``mp3``, ``chapter-001``…, ``manifest``, ``srt``, ``vtt``."""
    from api_min.routes.jobs import load_job, serve_artifact

    with runtime.transaction() as session:
        load_job(session, tenant_id, job_id)
        artifact = session.scalar(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.segment_id.is_(None), Artifact.kind == kind)
        )
    if artifact is None:
        raise ApiError(404, "file_not_found", f"job {job_id} has no {kind!r} file")
    return serve_artifact(runtime, artifact, artifact.storage_key.rsplit("/", 1)[-1], "file_not_found", redirect)
