"""Reference uploads. The bytes are analysed before anything is stored — decoded by content
(never by name or Content-Type), checked, trimmed and cut into 3–10 s windows by
``workers.sovits.reference`` — so a rejected upload leaves no row and no object behind.

This is the one place the API runs signal processing (a small VAD model, CPU, ~1 s per minute of
audio): rejecting noise or music with its own 4xx code has to happen inside the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.engine import ReferenceClip
from jobs.settings import Settings
from jobs.submission import RequestRejected

STATUS_BY_CODE = {"file_too_large": 413, "unsupported_audio_format": 415}
PROMPT_MAX_S = 10.0


@dataclass(frozen=True)
class PreparedReference:
    payload: bytes  # ReferenceClip.pack of the chosen windows
    analysis: dict[str, Any]
    transcript: str | None  # None when the voice runs reference-free


def prepare_reference(data: bytes, settings: Settings, transcript: str | None) -> PreparedReference:
    from workers.sovits.reference import ReferenceLimits, ReferenceRejected, analyse_reference

    try:
        audio = analyse_reference(data, ReferenceLimits(max_bytes=settings.max_upload_bytes))
    except ReferenceRejected as exc:
        raise RequestRejected(STATUS_BY_CODE.get(exc.code.value, 422), exc.code.value, exc.message) from exc
    clips = [ReferenceClip(w.audio_32k, w.audio_16k) for w in audio.windows]
    # The model's prompt is one 3–10 s clip whose words are known. A transcript of a longer
    # upload cannot be placed inside a window without alignment, so such voices run in the
    # official reference-free mode (style from every window, no prompt text) and say so.
    whole = len(audio.windows) == 1 and audio.windows[0].duration_s >= (audio.trim_end_s - audio.trim_start_s) - 0.05
    if transcript and whole:
        mode, reason = "prompted", "the transcript covers the whole reference clip"
    elif transcript:
        mode, reason = "reference_free", (
            f"the upload is {audio.trim_end_s - audio.trim_start_s:.1f} s of speech; a transcript is used only for "
            f"a clip of at most {PROMPT_MAX_S:.0f} s, so the voice uses the reference-free mode"
        )
        transcript = None
    else:
        mode, reason = "reference_free", "no transcript was given"
    analysis = {
        "container": audio.container,
        "source_sample_rate": audio.source_sample_rate,
        "source_channels": audio.source_channels,
        "duration_s": round(audio.duration_s, 3),
        "speech_s": round(audio.trim_end_s - audio.trim_start_s, 3),
        "speech_ratio": round(audio.speech_ratio, 3),
        "snr_db": round(audio.snr_db, 1),
        "clipped_fraction": audio.clipped_fraction,
        "windows": [
            {"start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3), "speech_ratio": round(w.speech_ratio, 3),
             "snr_db": round(w.snr_db, 1)}
            for w in audio.windows
        ],
        "reference_mode": mode,
        "reference_mode_reason": reason,
        "resampler": audio.resampler,
    }
    return PreparedReference(ReferenceClip.pack(clips), analysis, transcript)
