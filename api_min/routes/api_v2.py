"""A drop-in for the official GPT-SoVITS ``api_v2.py`` server: ``GET``/``POST /tts`` with every
parameter by its official name, and ``/set_gpt_weights`` / ``/set_sovits_weights``. Clients
written for that server (chatbot front ends, bots, dubbing tools) work unchanged; behind the
door is the ordinary synchronous path (``jobs.sync``: a job, the three pools, limits, the render
cache).

Differences a client may notice, each on purpose:
- ``ref_audio_path`` names a stored voice (its id or name), not a file on the server; the voice's
  own transcript and language are its prompt, so ``prompt_text``/``prompt_lang`` are accepted and
  not needed.
- ``/set_*_weights`` choose a *registered* model (its name, or the path it was registered with)
  for the calling API key only, stored in the database: no other key's requests change, and
  nothing is swapped in the workers (each job names its model).
- ``seed`` -1 (the official "random") renders with seed 0: the same request gives the same audio
  and is served from the render cache.
- Scheduling knobs (``batch_size``, ``batch_threshold``, ``split_bucket``, ``parallel_infer``,
  ``fragment_interval``, ``overlap_length``, ``min_chunk_length``) and the v3/v4-only
  ``sample_steps``/``super_sampling`` are accepted and have no effect: the pools batch on their own.

Errors answer the official JSON (``{"message", "Exception"}``, status 400) with our
``error: {code, message}`` beside it; 401, 429 and 503 keep their status and Retry-After."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict

from api_min.deps import Caller, RuntimeDep, SyncCapacity
from api_min.routes.tts import respond
from api_min.schemas import SynthesisParamsIn
from jobs import models, sync
from jobs.runtime import Runtime
from jobs.submission import NATIVE_RATE, RequestRejected
from jobs.tenants import Identity

# The official cut methods are ours under other names (same rules, workers/gpt/text/segment.py).
SPLIT_METHODS = {
    "cut0": "none",
    "cut1": "every_4_sentences",
    "cut2": "about_50_chars",
    "cut3": "chinese_period",
    "cut4": "english_period",
    "cut5": "punctuation",
}
# media_type → (our stream format, sample rate, the content type the official server sends).
MEDIA_TYPES = {
    "wav": ("wav", NATIVE_RATE, "audio/wav"),
    "raw": ("pcm", NATIVE_RATE, "audio/raw"),
    "ogg": ("opus", 48000, "audio/ogg"),
    "aac": ("aac", NATIVE_RATE, "audio/aac"),
}
# The official language codes voxmill speaks (the all_* forms are ours too); others are refused.
LANGUAGES = {"auto": "auto", "zh": "zh", "all_zh": "zh", "en": "en", "ja": "ja", "all_ja": "ja"}
KEEP_STATUS = (401, 429, 503)


class V2Request(BaseModel):
    """``TTS_Request`` of the official server, field for field."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    text_lang: str | None = None
    ref_audio_path: str | None = None
    aux_ref_audio_paths: list[str] | None = None
    prompt_lang: str | None = None
    prompt_text: str = ""
    top_k: int = 15
    top_p: float = 1
    temperature: float = 1
    text_split_method: str = "cut5"
    batch_size: int = 1
    batch_threshold: float = 0.75
    split_bucket: bool = True
    speed_factor: float = 1.0
    fragment_interval: float = 0.3
    seed: int = -1
    media_type: str = "wav"
    streaming_mode: bool | int = False
    parallel_infer: bool = True
    repetition_penalty: float = 1.35
    sample_steps: int = 32
    super_sampling: bool = False
    overlap_length: int = 2
    min_chunk_length: int = 16


class V2Error(Exception):
    def __init__(self, message: str, code: str, detail: str = "", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail
        self.status = status


def v2_error(
    status: int, message: str, code: str, exception: str = "", headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "error": {"code": code, "message": exception or message}}
    if exception:
        body["Exception"] = exception
    return JSONResponse(body, status_code=status, headers=headers)


class V2ErrorRoute(APIRoute):
    """Every error of these routes in the official shape (plus ours)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
                return v2_error(400, f"{where}: {first.get('msg', 'invalid')}", "invalid_request")
            except V2Error as exc:
                return v2_error(exc.status, exc.message, exc.code, exc.detail)
            except RequestRejected as exc:
                status = exc.status if exc.status in KEEP_STATUS else 400
                return v2_error(status, "tts failed", exc.code, exc.message, exc.headers)

        return route


router = APIRouter(tags=["api_v2"], route_class=V2ErrorRoute)


def streaming(value: bool | int) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1, 2, 3):
        return value != 0
    raise V2Error("the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)", "invalid_streaming_mode")


def check(req: V2Request) -> tuple[str, str, str]:
    """The official ``check_params``, in its order and words: (language, split, media)."""
    if not req.ref_audio_path:
        raise V2Error("ref_audio_path is required", "ref_audio_path_required")
    if not req.text:
        raise V2Error("text is required", "text_required")
    if not req.text_lang:
        raise V2Error("text_lang is required", "text_lang_required")
    language = LANGUAGES.get(req.text_lang.lower())
    if language is None:
        raise V2Error(f"text_lang: {req.text_lang} is not supported", "unsupported_language")
    if req.prompt_lang and req.prompt_lang.lower() not in LANGUAGES:
        raise V2Error(f"prompt_lang: {req.prompt_lang} is not supported", "unsupported_language")
    if req.media_type not in MEDIA_TYPES:
        raise V2Error(f"media_type: {req.media_type} is not supported", "unsupported_media_type")
    split = SPLIT_METHODS.get(req.text_split_method)
    if split is None:
        raise V2Error(f"text_split_method:{req.text_split_method} is not supported", "unsupported_split_method")
    if req.aux_ref_audio_paths:
        raise V2Error(
            "aux_ref_audio_paths is not supported: upload every reference clip into one voice",
            "aux_references_unsupported",
        )
    return language, split, req.media_type


def params_of(req: V2Request) -> dict[str, Any]:
    try:
        params = SynthesisParamsIn.model_validate(
            {
                "top_k": req.top_k,
                "top_p": req.top_p,
                "temperature": req.temperature,
                "repetition_penalty": req.repetition_penalty,
                "speed": req.speed_factor,
                "seed": max(req.seed, 0),
            }
        )
    except ValueError as exc:
        raise V2Error("tts failed", "invalid_params", str(exc)) from None
    result: dict[str, Any] = params.model_dump()
    return result


async def render(req: V2Request, caller: Identity, runtime: Runtime) -> Response:
    language, split, media = check(req)
    stream = streaming(req.streaming_mode)
    params = params_of(req)
    assert req.text is not None and req.ref_audio_path is not None
    voice_id: uuid.UUID = await run_in_threadpool(sync.find_voice, runtime, caller.tenant_id, req.ref_audio_path)
    format_name, rate, mime = MEDIA_TYPES[media]
    # Characters, the queued-job cap and the callback are admitted with the job (jobs.limits.admit_job).
    return await respond(
        runtime,
        caller,
        text=req.text,
        voice_id=voice_id,
        language=language,
        format_name=format_name,
        sample_rate=rate,
        split=split,
        params=params,
        as_json=False,
        whole=not stream,
        media_type=mime,
        model_selection=models.selector(caller.tenant_id, caller.key_id),
    )


@router.get("/tts", response_class=Response, dependencies=[SyncCapacity])
async def tts_get(
    caller: Caller,
    runtime: RuntimeDep,
    text: str | None = None,
    text_lang: str | None = None,
    ref_audio_path: str | None = None,
    aux_ref_audio_paths: list[str] | None = Query(None),
    prompt_lang: str | None = None,
    prompt_text: str = "",
    top_k: int = 15,
    top_p: float = 1,
    temperature: float = 1,
    text_split_method: str = "cut5",
    batch_size: int = 1,
    batch_threshold: float = 0.75,
    split_bucket: bool = True,
    speed_factor: float = 1.0,
    fragment_interval: float = 0.3,
    seed: int = -1,
    media_type: str = "wav",
    parallel_infer: bool = True,
    repetition_penalty: float = 1.35,
    sample_steps: int = 32,
    super_sampling: bool = False,
    streaming_mode: bool | int = False,
    overlap_length: int = 2,
    min_chunk_length: int = 16,
) -> Response:
    """The official ``GET /tts``: the parameters in the query string."""
    req = V2Request(
        text=text,
        text_lang=text_lang,
        ref_audio_path=ref_audio_path,
        aux_ref_audio_paths=aux_ref_audio_paths,
        prompt_lang=prompt_lang,
        prompt_text=prompt_text,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        text_split_method=text_split_method,
        batch_size=batch_size,
        batch_threshold=batch_threshold,
        split_bucket=split_bucket,
        speed_factor=speed_factor,
        fragment_interval=fragment_interval,
        seed=seed,
        media_type=media_type,
        streaming_mode=streaming_mode,
        parallel_infer=parallel_infer,
        repetition_penalty=repetition_penalty,
        sample_steps=sample_steps,
        super_sampling=super_sampling,
        overlap_length=overlap_length,
        min_chunk_length=min_chunk_length,
    )
    return await render(req, caller, runtime)


@router.post("/tts", response_class=Response, dependencies=[SyncCapacity])
async def tts_post(body: V2Request, caller: Caller, runtime: RuntimeDep) -> Response:
    """The official ``POST /tts``: the same parameters as a JSON body."""
    return await render(body, caller, runtime)


def _select(runtime: Runtime, caller: Identity, half: str, weights_path: str) -> None:
    try:
        with runtime.transaction() as session:
            models.select_weights(session, caller.tenant_id, caller.key_id, half, weights_path)
    except models.ModelError as exc:
        what = "gpt" if half == "gpt" else "sovits"
        raise V2Error(f"change {what} weight failed", exc.code, exc.message) from None


@router.get("/set_gpt_weights")
async def set_gpt_weights(caller: Caller, runtime: RuntimeDep, weights_path: str | None = None) -> JSONResponse:
    """Render this API key's requests with the GPT weights of a registered model (its name or
    registered file path); other keys are not affected."""
    if not weights_path:
        raise V2Error("gpt weight path is required", "weights_path_required")
    await run_in_threadpool(_select, runtime, caller, "gpt", weights_path)
    return JSONResponse({"message": "success"})


@router.get("/set_sovits_weights")
async def set_sovits_weights(caller: Caller, runtime: RuntimeDep, weights_path: str | None = None) -> JSONResponse:
    """Render this API key's requests with the SoVITS weights of a registered model."""
    if not weights_path:
        raise V2Error("sovits weight path is required", "weights_path_required")
    await run_in_threadpool(_select, runtime, caller, "sovits", weights_path)
    return JSONResponse({"message": "success"})
