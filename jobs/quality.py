"""The quality gate's rules: what a render's scores must reach, and the seed of each re-render.
Scores are taken in the post stage (``workers.post.quality``); the state change a rejected
render causes (post_running → queued) is ``jobs.lifecycle.complete_stage``'s.

A score that cannot be taken (a voice with no usable reference, a segment with too little voiced
audio for a d-vector) is noted, never counted as a failure: the gate rejects what it measured as
bad, not what it could not measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.settings import Settings

SEED_LIMIT = 2**31  # the API's seed range is [0, 2**31)


def render_seed(seed: int, render_attempt: int) -> int:
    """The seed of render ``render_attempt`` (1 = the job's own seed): each re-render samples a
    different T2S token sequence and SoVITS noise, and the same job re-renders the same way."""
    return (seed + render_attempt - 1) % SEED_LIMIT


@dataclass(frozen=True)
class RenderQuality:
    """The scores of one render and the thresholds it missed."""

    dnsmos: dict[str, float] | None  # sig, bak, ovrl, p808 (1-5); None: not scored
    similarity: float | None  # cosine to the voice's d-vector; None: not scored (see notes)
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.failures


def evaluate(
    settings: Settings,
    dnsmos: dict[str, float] | None,
    similarity: float | None,
    notes: tuple[str, ...] = (),
) -> RenderQuality:
    failures: list[str] = []
    if dnsmos is not None and dnsmos["ovrl"] < settings.quality_min_dnsmos_ovrl:
        failures.append(f"dnsmos_ovrl {dnsmos['ovrl']:.2f} < {settings.quality_min_dnsmos_ovrl:g}")
    if similarity is not None and similarity < settings.quality_min_similarity:
        failures.append(f"similarity {similarity:.2f} < {settings.quality_min_similarity:g}")
    return RenderQuality(dnsmos, similarity, tuple(failures), tuple(notes))


def should_rerender(settings: Settings, render_attempt: int, quality: RenderQuality) -> bool:
    """Below the gate, enforced, and re-renders left (render 1 plus ``quality_max_rerenders``)."""
    return (
        settings.quality_gate == "enforce"
        and not quality.passed
        and render_attempt <= settings.quality_max_rerenders
    )
