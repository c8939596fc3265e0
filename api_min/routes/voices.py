"""Voices: upload a reference, read, list, rename, delete."""

from __future__ import annotations

import unicodedata
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api_min.deps import RuntimeDep, TenantId
from api_min.errors import ApiError
from api_min.forms import read_upload_form
from api_min.schemas import ErrorDetail, VoiceList, VoiceOut, VoicePatch
from db.models import Voice
from jobs import voice_catalog
from jobs.submission import check_storable, submit_voice

router = APIRouter(prefix="/v1/voices", tags=["voices"])

LANGUAGES = ("zh", "en", "ja")
TRANSCRIPT_MAX_CHARS = 2000
NAME_MAX_CHARS = 200
FIELD_MAX_BYTES = 16 * 1024

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": "About a minute of speech; any common format, read from the content.",
                        },
                        "language": {"type": "string", "enum": list(LANGUAGES), "default": "en"},
                        "transcript": {
                            "type": "string",
                            "maxLength": TRANSCRIPT_MAX_CHARS,
                            "description": "What a 3–10 s upload says (UTF-8). Omit for reference-free mode.",
                        },
                        "name": {"type": "string", "maxLength": NAME_MAX_CHARS},
                    },
                }
            }
        },
    }
}


def voice_out(voice: Voice) -> VoiceOut:
    return VoiceOut(
        id=voice.id,
        name=voice.name,
        status=voice.status,
        language=voice.language,
        transcript=voice.transcript,
        reference_free=voice.transcript is None,
        model_version=voice.model_version,
        analysis=voice.analysis,
        error=ErrorDetail(code=voice.failure_code, message=voice.failure_message or "") if voice.failure_code else None,
        created_at=voice.created_at,
    )


def _has_control_chars(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value)


def _text_field(fields: dict[str, bytes], name: str, max_chars: int) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, f"{name}_not_utf8", f"the {name} field is not UTF-8 text") from None
    if _has_control_chars(value):
        raise ApiError(422, f"invalid_{name}", f"the {name} field contains control characters")
    if len(value) > max_chars:
        raise ApiError(422, f"{name}_too_long", f"the {name} field has {len(value)} characters; the limit is {max_chars}")
    return value.strip() or None


def _file_name(raw: bytes | None) -> str | None:
    """The upload's file name, used only as the default voice name — never as a path. A name
    that tries to be a path is refused rather than cleaned: it is a client bug or a probe."""
    if not raw:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_filename", "the file name is not UTF-8") from None
    if "/" in name or "\\" in name or name.strip(". ") == "" or _has_control_chars(name):
        raise ApiError(422, "invalid_filename", "the file name must be a plain name: no folders, no control characters")
    return name[:NAME_MAX_CHARS]


@router.post("", status_code=202, response_model=VoiceOut, openapi_extra=UPLOAD_BODY)
async def create_voice(request: Request, tenant_id: TenantId, runtime: RuntimeDep) -> VoiceOut:
    """Upload a reference recording (multipart: ``audio``, ``language``, ``transcript``,
    ``name``). The format is read from the content, never the name or type; nothing is stored
    unless every check passes. The voice becomes ``ready`` once its features are computed."""
    settings = runtime.settings
    form = await read_upload_form(request, "audio", settings.max_upload_bytes, FIELD_MAX_BYTES)
    if form.file is None:
        raise ApiError(422, "invalid_request", "the form needs an 'audio' file part")
    raw_language = form.fields.get("language")
    language = raw_language.decode("utf-8", "replace").strip() if raw_language is not None else "en"
    if language not in LANGUAGES:
        raise ApiError(422, "unsupported_language", f"language must be zh, en or ja, not {language[:20]!r}")
    transcript = _text_field(form.fields, "transcript", TRANSCRIPT_MAX_CHARS)
    name = _text_field(form.fields, "name", NAME_MAX_CHARS) or _file_name(form.filename) or "voice"
    from api_min.uploads import prepare_reference

    prepared = await run_in_threadpool(prepare_reference, form.file, settings, transcript)
    voice = await run_in_threadpool(
        submit_voice,
        runtime,
        tenant_id,
        name,
        language,
        prepared.transcript,
        prepared.payload,
        prepared.analysis,
    )
    with runtime.transaction() as session:
        fresh = session.get(Voice, voice.id)
        assert fresh is not None
        return voice_out(fresh)


@router.get("", response_model=VoiceList)
def list_voices(
    tenant_id: TenantId,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> VoiceList:
    """The tenant's voices, newest first; deleted ones are gone."""
    with runtime.transaction() as session:
        voices, next_cursor = voice_catalog.list_voices(session, tenant_id, limit, cursor)
        return VoiceList(data=[voice_out(v) for v in voices], next_cursor=next_cursor)


@router.get("/{voice_id}", response_model=VoiceOut)
def get_voice(voice_id: uuid.UUID, tenant_id: TenantId, runtime: RuntimeDep) -> VoiceOut:
    with runtime.transaction() as session:
        return voice_out(voice_catalog.load_voice(session, tenant_id, voice_id))


@router.patch("/{voice_id}", response_model=VoiceOut)
def rename_voice(voice_id: uuid.UUID, body: VoicePatch, tenant_id: TenantId, runtime: RuntimeDep) -> VoiceOut:
    """Rename a voice."""
    check_storable(body.name, "invalid_name", "name")
    if _has_control_chars(body.name) or not body.name.strip():
        raise ApiError(422, "invalid_name", "a name has visible characters and no control characters")
    with runtime.transaction() as session:
        return voice_out(voice_catalog.rename_voice(session, tenant_id, voice_id, body.name.strip()))


@router.delete("/{voice_id}", status_code=204, response_class=Response)
def delete_voice(voice_id: uuid.UUID, tenant_id: TenantId, runtime: RuntimeDep) -> Response:
    """Delete a voice and its stored features. Rendered jobs keep their audio; the voice can no
    longer be used for new jobs, and unfinished jobs in it fail."""
    with runtime.transaction() as session:
        voice_catalog.delete_voice(session, runtime, tenant_id, voice_id)
    return Response(status_code=204)
