"""Short text answered within the request: ``POST /v1/tts`` and the OpenAI-compatible
``POST /v1/audio/speech``. Both submit an ordinary job (``jobs.sync``: a job row, the same stage
tasks, retries and content keys) and stream its segments as they finish
(``api_min.streaming``); past ``VOXMILL_SYNC_TIMEOUT_S`` the job is cancelled and the answer is
504 ``sync_timeout``.

Errors before the first audio byte have a status and a code like every other route (a failed
segment answers with its own code: 422 for text the engine refuses, 502 for a pipeline failure).
Once audio is flowing the status is sent, so a later failure ends the stream early: the response
is cut off without its final chunk, which every HTTP client reports as an incomplete body."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from api_min.deps import Caller, RuntimeDep, SyncCapacity
from api_min.errors import ApiError
from api_min.schemas import ErrorBody, Language, SplitMethod, SynthesisParamsIn
from api_min.streaming import SegmentStream
from jobs import sync
from jobs.runtime import Runtime
from jobs.submission import NATIVE_RATE, JobRequest, RequestRejected
from jobs.tenants import Identity
from workers.post.audio.codecs import EncoderError
from workers.post.audio.stream import STREAM_FORMATS, StreamEncoder, complete

# The circuit breaker: both sync routes refuse with 503 + Retry-After while the sovits queue is
# too deep or failing, before a row is written (the OpenAI route in its error shape); /v1/jobs
# keeps accepting work.
SYNC_GUARDS: list[Any] = [SyncCapacity]

StreamFormatName = Literal["wav", "pcm", "flac", "mp3", "opus", "aac"]
SampleRate = Literal[16000, 22050, 24000, 32000, 44100, 48000]
# The job behind a sync request stores its assembled file in the nearest job format.
JOB_FORMATS = {"wav": "wav", "pcm": "wav", "flac": "flac", "mp3": "mp3", "opus": "opus", "aac": "m4a"}
# OpenAI documents ``pcm`` as 24 kHz 16-bit little-endian; clients play it at that rate.
OPENAI_PCM_RATE = 24000
SYNC_SPLIT: SplitMethod = "about_50_chars"
SYNC_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (409, 413, 502, 504)}
AUDIO_CONTENT: dict[str, Any] = {fmt.mime: {} for fmt in STREAM_FORMATS.values()}


class TtsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="At most VOXMILL_SYNC_MAX_CHARS characters (500).")
    voice_id: uuid.UUID
    language: Language = "auto"
    format: StreamFormatName = Field(
        "wav",
        description="wav: 16-bit PCM WAV with unknown sizes in its header (streamed); pcm: the same "
        "samples, no header (s16le mono); mp3; opus (Ogg); aac (ADTS); flac.",
    )
    sample_rate: SampleRate | None = Field(None, description="Default 32 kHz (48 kHz for Opus).")
    split: SplitMethod = Field(
        SYNC_SPLIT, description="Segments are streamed one by one; the default closes one past ~50 characters."
    )
    params: SynthesisParamsIn = Field(default_factory=SynthesisParamsIn)
    response: Literal["audio", "json"] | None = Field(
        None,
        description="audio: the bytes, streamed; json: base64 in a JSON body once complete. "
        "Unset: json when the Accept header asks for application/json and no audio type.",
    )


class TtsJsonOut(BaseModel):
    job_id: uuid.UUID
    format: str
    content_type: str
    sample_rate: int
    segments: int
    duration_s: float
    model_version: str | None
    audio_base64: str = Field(description="The whole file, lengths filled in (WAV sizes, FLAC sample count).")


class VoiceRef(BaseModel):
    id: str = Field(min_length=1, max_length=200)


class SpeechIn(BaseModel):
    """OpenAI's ``audio.speech.create`` body. Unknown fields are ignored, as OpenAI's clients add
    fields over time."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200, description="Any name; every model maps to this deployment's.")
    input: str = Field(min_length=1, description="At most VOXMILL_SYNC_MAX_CHARS characters (500).")
    voice: str | VoiceRef = Field(description="A voxmill voice id or name, or {\"id\": ...}.")
    response_format: StreamFormatName = "mp3"
    speed: float = Field(1.0, ge=0.5, le=2.0, description="0.5–2.0 (OpenAI allows 0.25–4.0).")
    instructions: str | None = Field(None, description="Accepted and ignored.")
    stream_format: Literal["audio"] = Field("audio", description="Only raw audio; sse is refused.")


# ------------------------------------------------------------------------------ OpenAI error shape

OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
OPENAI_PARAMS = {
    "voice_not_found": "voice",
    "voice_unavailable": "voice",
    "text_too_long": "input",
    "empty_text": "input",
    "unspeakable_text": "input",
    "sample_rate_unsupported": "response_format",
}


def openai_error(
    status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Our error body plus OpenAI's ``type`` and ``param``: ``{"error": {"code", "message",
    "type", "param"}}`` reads as either."""
    kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"code": code, "message": message, "type": kind, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


class OpenAIErrorRoute(APIRoute):
    """Answers this route's errors in the OpenAI-readable shape (the app's handlers give ours)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                loc = [str(p) for p in first.get("loc", ()) if p != "body"]
                where = ".".join(loc) or "body"
                return openai_error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}", loc[0] if loc else None)
            except RequestRejected as exc:
                return openai_error(exc.status, exc.code, exc.message, OPENAI_PARAMS.get(exc.code), exc.headers)

        return route


# ------------------------------------------------------------------------------ the routes

tts_router = APIRouter()
openai_router = APIRouter(route_class=OpenAIErrorRoute)


def wants_json(accept: str | None) -> bool:
    types = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    return "application/json" in types and not any(t.startswith("audio/") or t == "*/*" for t in types)


async def respond(
    runtime: Runtime,
    caller: Identity,
    *,
    text: str,
    voice_id: uuid.UUID,
    language: str,
    format_name: str,
    sample_rate: int,
    split: str,
    params: dict[str, Any],
    as_json: bool,
    whole: bool = False,
    media_type: str | None = None,
    model_selection: str | None = None,
) -> Response:
    """``whole``: answer the complete file in one body (lengths filled in) instead of streaming;
    ``media_type`` overrides the format's content type; ``model_selection``: the api_v2 choice
    of weights to render with (``jobs.models.selector``)."""
    fmt = STREAM_FORMATS[format_name]
    sync.check_text(runtime, text)
    try:
        encoder = StreamEncoder(fmt, sample_rate)
    except EncoderError as exc:
        raise ApiError(422, "sample_rate_unsupported", str(exc)) from None
    try:
        await encoder.start()  # before the job: an encoder that cannot start leaves no row behind
    except EncoderError as exc:
        raise ApiError(500, "encoder_unavailable", str(exc)) from None
    request = JobRequest(
        text=text,
        voice_id=voice_id,
        language=language,
        output_format=JOB_FORMATS[format_name],
        sample_rate=sample_rate,
        split_method=split,
        params=params,
        model_selection=model_selection,
    )
    try:
        render = await sync.start(runtime, caller.tenant_id, request, caller)
    except BaseException:
        await encoder.close()
        raise
    stream = SegmentStream(runtime, render, encoder)
    await stream.start()  # the first segment, or the error that stopped it, with its status
    headers = {"Voxmill-Job-Id": str(render.job_id), "Voxmill-Sample-Rate": str(sample_rate), "Cache-Control": "no-store"}
    if render.model_version:
        headers["Voxmill-Model-Version"] = render.model_version
    if whole:
        data = complete(fmt, b"".join([chunk async for chunk in stream.chunks()]), sample_rate, encoder.frames)
        return Response(data, media_type=media_type or fmt.mime, headers=headers)
    if as_json:
        data = complete(fmt, b"".join([chunk async for chunk in stream.chunks()]), sample_rate, encoder.frames)
        body = TtsJsonOut(
            job_id=render.job_id,
            format=format_name,
            content_type=fmt.mime,
            sample_rate=sample_rate,
            segments=stream.segments,
            duration_s=round(encoder.frames / sample_rate, 3),
            model_version=render.model_version,
            audio_base64=base64.b64encode(data).decode("ascii"),
        )
        return JSONResponse(body.model_dump(mode="json"), headers=headers)
    headers["X-Accel-Buffering"] = "no"  # proxies: pass each chunk on as it comes
    return StreamingResponse(stream.body(), media_type=media_type or fmt.mime, headers=headers)


@tts_router.post(
    "/tts",
    response_class=Response,
    responses={200: {"model": TtsJsonOut, "content": AUDIO_CONTENT, "description": "The audio."}, **SYNC_ERRORS},
)
async def tts(
    body: TtsIn,
    caller: Caller,
    runtime: RuntimeDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Render a short text (≤ 500 characters) and answer with the audio, streamed segment by
    segment as each finishes (or base64 in JSON when asked). Headers: ``Voxmill-Job-Id`` (the
    job behind it), ``Voxmill-Sample-Rate``, ``Voxmill-Model-Version``."""
    fmt = body.format
    return await respond(
        runtime,
        caller,
        text=body.text,
        voice_id=body.voice_id,
        language=body.language,
        format_name=fmt,
        sample_rate=body.sample_rate or (48000 if fmt == "opus" else NATIVE_RATE),
        split=body.split,
        params=body.params.model_dump(),
        as_json=body.response == "json" or (body.response is None and wants_json(accept)),
    )


@openai_router.post(
    "/audio/speech",
    response_class=Response,
    responses={200: {"content": AUDIO_CONTENT, "description": "The audio, streamed."}, **SYNC_ERRORS},
)
async def speech(body: SpeechIn, caller: Caller, runtime: RuntimeDep) -> Response:
    """OpenAI-compatible speech (``client.audio.speech.create``). ``voice`` is a voxmill voice
    id or name; ``model`` may be any name; ``pcm`` is 24 kHz as OpenAI documents, Opus 48 kHz,
    the other formats 32 kHz. Errors carry OpenAI's ``type`` and ``param`` beside our ``code``."""
    ref = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
    voice_id = await run_in_threadpool(sync.find_voice, runtime, caller.tenant_id, ref)
    fmt = body.response_format
    rate = {"pcm": OPENAI_PCM_RATE, "opus": 48000}.get(fmt, NATIVE_RATE)
    return await respond(
        runtime,
        caller,
        text=body.input,
        voice_id=voice_id,
        language="auto",
        format_name=fmt,
        sample_rate=rate,
        split=SYNC_SPLIT,
        params=SynthesisParamsIn.model_validate({"speed": body.speed}).model_dump(),
        as_json=False,
    )


router = APIRouter(prefix="/v1", tags=["sync"], dependencies=SYNC_GUARDS)
router.include_router(tts_router)
router.include_router(openai_router)
