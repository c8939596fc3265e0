"""Voices: upload a reference, read, list, rename or choose the model, delete."""

from __future__ import annotations

import unicodedata
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import object_session

from api_min.deps import RuntimeDep, TenantId
from api_min.errors import ApiError
from api_min.forms import read_upload_form
from api_min.schemas import ErrorDetail, VoiceList, VoiceOut, VoicePatch
from db.models import Model, Voice
from jobs import models, voice_catalog
from jobs.runtime import Runtime
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
                        "model": {
                            "type": "string",
                            "maxLength": NAME_MAX_CHARS,
                            "description": "A registered model by name (default: the deployment's).",
                        },
                    },
                }
            }
        },
    }
}


def voice_out(voice: Voice) -> VoiceOut:
    session = object_session(voice)
    model = session.get(Model, voice.model_id) if session is not None and voice.model_id else None
    return VoiceOut(
        id=voice.id,
        name=voice.name,
        status=voice.status,
        language=voice.language,
        transcript=voice.transcript,
        reference_free=voice.transcript is None,
        model_version=voice.model_version,
        model=model.name if model is not None else None,
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
    model_name = _text_field(form.fields, "model", NAME_MAX_CHARS)
    model_id = await run_in_threadpool(_model_id, runtime, tenant_id, model_name) if model_name else None
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
        model_id,
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


def _model_id(runtime: Runtime, tenant_id: uuid.UUID, name: str) -> uuid.UUID:
    with runtime.transaction() as session:
        model = models.find_model(session, tenant_id, name)
        if model is None:
            raise ApiError(422, "model_not_found", f"no model named {name!r}")
        return model.id


@router.patch("/{voice_id}", response_model=VoiceOut)
def update_voice(voice_id: uuid.UUID, body: VoicePatch, tenant_id: TenantId, runtime: RuntimeDep) -> VoiceOut:
    """Rename a voice, or choose its model (``""``: back to the deployment default). Jobs
    submitted afterwards render with the new model; their segments get new content keys, so
    what the model changes is rendered again and switching back finds the old renders cached."""
    if body.name is None and body.model is None:
        raise ApiError(422, "invalid_request", "give a name, a model, or both")
    if body.name is not None:
        check_storable(body.name, "invalid_name", "name")
        if _has_control_chars(body.name) or not body.name.strip():
            raise ApiError(422, "invalid_name", "a name has visible characters and no control characters")
    model_id = _model_id(runtime, tenant_id, body.model) if body.model else None
    with runtime.transaction() as session:
        voice = voice_catalog.load_voice(session, tenant_id, voice_id)
        if body.name is not None:
            voice = voice_catalog.rename_voice(session, tenant_id, voice_id, body.name.strip())
        if body.model is not None:
            voice = voice_catalog.set_voice_model(session, tenant_id, voice_id, model_id)
        return voice_out(voice)


@router.delete("/{voice_id}", status_code=204, response_class=Response)
def delete_voice(voice_id: uuid.UUID, tenant_id: TenantId, runtime: RuntimeDep) -> Response:
    """Delete a voice and its stored features. Rendered jobs keep their audio; the voice can no
    longer be used for new jobs, and unfinished jobs in it fail."""
    with runtime.transaction() as session:
        voice_catalog.delete_voice(session, runtime, tenant_id, voice_id)
    return Response(status_code=204)
