"""Audio finishing for the post queue: pure functions on numpy arrays (no Celery, DB or storage).

Measurement (``meter``), true-peak limiting (``limiter``), loudness targets and chapter levelling
(``loudness``), RNNoise denoising (``denoise``), encoders (``codecs``), DNSMOS and speaker
similarity (``quality``), and the normalise→encode→verify pipeline a task calls (``pipeline``).

Arrays are float, shaped ``[n]`` (mono) or ``[n, channels]``, nominal full scale ±1.0.
"""

from workers.post.audio.codecs import FORMATS, AudioFormat, EncoderError, decode, encode, get_format
from workers.post.audio.limiter import true_peak_limit
from workers.post.audio.loudness import (
    ACX,
    EBU_R128,
    PRESETS,
    VOICE_OVER,
    ChapterResult,
    LevelReport,
    LoudnessTarget,
    Normalized,
    normalize,
    normalize_chapter,
)
from workers.post.audio.meter import (
    integrated_loudness,
    noise_floor_db,
    rms_db,
    sample_peak_db,
    true_peak_db,
)
from workers.post.audio.pipeline import Finished, finish
from workers.post.audio.resample import resample

__all__ = [
    "ACX",
    "EBU_R128",
    "FORMATS",
    "PRESETS",
    "VOICE_OVER",
    "AudioFormat",
    "ChapterResult",
    "EncoderError",
    "Finished",
    "LevelReport",
    "LoudnessTarget",
    "Normalized",
    "decode",
    "encode",
    "finish",
    "get_format",
    "integrated_loudness",
    "noise_floor_db",
    "normalize",
    "normalize_chapter",
    "resample",
    "rms_db",
    "sample_peak_db",
    "true_peak_db",
    "true_peak_limit",
]
