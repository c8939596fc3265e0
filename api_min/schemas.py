"""Request and response bodies of the HTTP API (they are the OpenAPI schema at ``/docs``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Language = Literal["auto", "zh", "en", "ja"]
OutputFormat = Literal["wav", "wav24", "flac", "mp3", "opus", "m4a"]
SplitMethod = Literal[
    "sentences", "none", "every_4_sentences", "about_50_chars", "chinese_period", "english_period", "punctuation"
]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable cause, e.g. text_too_long.")
    message: str
    details: list[dict[str, object]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class SynthesisParamsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(15, ge=1, le=100)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0, le=2.0)
    repetition_penalty: float = Field(1.35, ge=1.0, le=2.0)
    speed: float = Field(1.0, ge=0.5, le=2.0)
    noise_scale: float = Field(0.5, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    loudness_preset: Literal["voice_over", "ebu_r128", "acx"] = Field(
        "voice_over", description="voice_over: −16 LUFS / −1 dBTP; ebu_r128: −23 LUFS; acx: audiobook RMS/peak."
    )
    loudness_lufs: float | None = Field(None, ge=-40.0, le=-5.0, description="Overrides the preset's level.")
    true_peak_dbtp: float | None = Field(None, ge=-9.0, le=0.0, description="Overrides the preset's ceiling.")
    denoise: bool = False


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="Text to speak; long texts are split into segments.")
    voice_id: uuid.UUID
    language: Language = "auto"
    format: OutputFormat = "wav"
    sample_rate: Literal[16000, 22050, 24000, 32000, 44100, 48000] | None = Field(
        None, description="Output rate; default the model's 32 kHz (48 kHz for Opus)."
    )
    split: SplitMethod = "sentences"
    params: SynthesisParamsIn = Field(default_factory=SynthesisParamsIn)
    callback_url: str | None = Field(None, max_length=2048)
    model: str | None = Field(
        None, max_length=200, description="A registered model by name; default: the voice's model, else the deployment's."
    )


class Progress(BaseModel):
    segments_total: int
    segments_done: int
    segments_failed: int
    fraction: float
    segments_reused: int = Field(0, description="Segments finished at planning from the render cache.")


class ChapterProgress(BaseModel):
    index: int
    title: str
    segments_total: int
    segments_done: int
    segments_failed: int
    fraction: float


class RenderOut(BaseModel):
    """One render of a segment as the quality gate scored it."""

    attempt: int = Field(description="1 = first render; each re-render uses the next seed.")
    seed: int
    dnsmos: dict[str, float] | None = Field(description="DNSMOS P.835 sig, bak, ovrl and P.808, 1-5.")
    similarity: float | None = Field(description="Speaker similarity to the voice (cosine of d-vectors).")
    passed: bool
    verdict: Literal["passed", "failed", "unscored"] = Field(
        description="failed: a threshold missed or T2S hit its token cap; unscored: a scorer failed "
        "or nothing could be measured (not a pass)."
    )
    stop_reason: Literal["eos", "cap"] | None = Field(
        None, description="How T2S generation stopped: eos (by itself) or cap (its token cap). None: not known."
    )
    failures: list[str] = Field(description="Thresholds this render missed.")
    notes: list[str] = Field(description="Scores that could not be taken, and why.")


class ScoresOut(BaseModel):
    """The final render's scores: for a reused segment, those its render carried."""

    dnsmos: dict[str, float] | None
    similarity: float | None
    failures: list[str]
    notes: list[str]
    unscored: list[str] = Field(default_factory=list, description="Why the render could not be scored.")


class SegmentOut(BaseModel):
    index: int
    status: str
    attempts: int
    duration_s: float | None
    error: ErrorDetail | None
    chapter: int | None = None
    reused: bool = Field(False, description="Finished at planning: a render of the same content key was reused.")
    quality_passed: bool | None = Field(
        None, description="None: not scored (yet). False: failed the gate or could not be scored."
    )
    quality_verdict: Literal["passed", "failed", "unscored"] | None = Field(
        None, description="The final render's verdict, reused renders included. None: not scored (yet)."
    )
    stop_reason: Literal["eos", "cap"] | None = Field(
        None, description="How the final render's T2S generation stopped. None: not known (yet)."
    )
    scores: ScoresOut | None = Field(None, description="The final render's scores, reused renders included.")
    renders: list[RenderOut] = Field(default_factory=list)


class QualityOut(BaseModel):
    segments_scored: int
    segments_rerendered: int
    segments_below_gate: list[int] = Field(
        description="Indexes of segments whose last render never passed the quality gate (failed or unscored)."
    )
    segments_unscored: list[int] = Field(
        default_factory=list, description="Indexes of segments whose last render could not be scored."
    )
    segments_t2s_cap: list[int] = Field(
        default_factory=list, description="Indexes of segments whose T2S generation hit its token cap."
    )


class ArtifactOut(BaseModel):
    kind: str
    segment_index: int | None
    key: str
    size_bytes: int
    sha256: str
    content_type: str


class WebhookAttemptOut(BaseModel):
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    succeeded: bool


class WebhookDeliveryOut(BaseModel):
    id: uuid.UUID
    event: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    history: list[WebhookAttemptOut]


class JobOut(BaseModel):
    id: uuid.UUID
    status: str
    voice_id: uuid.UUID
    language: str
    format: str
    sample_rate: int
    model_version: str | None
    model: ModelUsed | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    error: ErrorDetail | None
    audio_url: str | None
    segments: list[SegmentOut]
    artifacts: list[ArtifactOut]
    webhook_deliveries: list[WebhookDeliveryOut]
    project_id: uuid.UUID | None = None
    chapters: list[ChapterProgress] | None = Field(None, description="Books: progress per chapter.")
    quality: QualityOut | None = None


class VoiceOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    language: str
    transcript: str | None
    reference_free: bool
    model_version: str | None
    model: str | None = Field(None, description="The registered model the voice speaks with; null: the default.")
    analysis: dict[str, object] | None
    error: ErrorDetail | None
    created_at: datetime


class VoiceList(BaseModel):
    data: list[VoiceOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class VoicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    model: str | None = Field(
        None,
        max_length=200,
        description="A registered model by name; \"\" returns the voice to the deployment default. "
        "New jobs render with it; segments it changes are re-rendered, the rest come from the cache.",
    )


class ModelUsed(BaseModel):
    """The registered model a job ran on (null on the job: the deployment's default files)."""

    name: str
    generation: str
    gpt_sha256: str
    sovits_sha256: str


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    gpt: str = Field(min_length=1, max_length=1024, description="Path of the GPT (T2S) .ckpt, under the models folder.")
    sovits: str = Field(min_length=1, max_length=1024, description="Path of the SoVITS .pth, under the models folder.")


class ModelOut(BaseModel):
    name: str
    scope: Literal["tenant", "deployment"]
    generation: str
    gpt_sha256: str
    sovits_sha256: str
    gpt_path: str | None = Field(None, description="Shown for the tenant's own models.")
    sovits_path: str | None = None
    created_at: datetime


class ModelList(BaseModel):
    data: list[ModelOut]


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ProjectOut(BaseModel):
    id: uuid.UUID
    name: str
    voice_id: uuid.UUID
    language: str
    format: str
    params: dict[str, object]
    options: dict[str, object]
    source_format: str | None
    schedule_every_s: int | None
    next_run_at: datetime | None
    last_job_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class ProjectPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voice_id: uuid.UUID | None = Field(None, description="A new voice makes every segment stale: re-rendered at once.")
    schedule_every_s: int | None = Field(None, ge=0, description="Re-render this often (0: no schedule).")
    params: SynthesisParamsIn | None = None
    options: dict[str, object] | None = Field(None, description="pauses, lexicon, speak_titles (see POST /v1/books).")
    render: bool = Field(True, description="Render now when anything changed.")
