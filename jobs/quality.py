"""The quality gate's rules: what a render's scores must reach, its verdict, and the seed of each
re-render. Scores are taken in the post stage (``workers.post.gate``); the state change a rejected
render causes (post_running → queued) is ``jobs.lifecycle.complete_stage``'s.

A render has one of three verdicts:

* ``failed``: a score it was measured on is below its threshold, or T2S generation ran into its
  token cap instead of stopping by itself (stop reason ``cap``: the long-text repeat failure).
* ``unscored``: a scorer raised (a broken model install, say), or nothing at all could be
  measured. Not a pass: in ``enforce`` mode it is re-rendered like a failure.
* ``passed``: otherwise. A single score that cannot be taken for a known reason (a voice with no
  usable reference, too little voiced audio for a d-vector) is noted, not held against the
  render, as long as the other score was taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from jobs.engine import STOP_REASONS, StopReason
from jobs.settings import Settings

SEED_LIMIT = 2**31  # the API's seed range is [0, 2**31)

Verdict = Literal["passed", "failed", "unscored"]
VERDICTS: tuple[Verdict, ...] = ("passed", "failed", "unscored")
CAP_FAILURE = "stop_reason cap: T2S generation hit its token cap without emitting EOS"


def render_seed(seed: int, render_attempt: int) -> int:
    """The seed of render ``render_attempt`` (1 = the job's own seed): each re-render samples a
    different T2S token sequence and SoVITS noise, and the same job re-renders the same way."""
    return (seed + render_attempt - 1) % SEED_LIMIT


@dataclass(frozen=True)
class RenderQuality:
    """The scores of one render, the thresholds it missed, and the scorers that failed."""

    dnsmos: dict[str, float] | None  # sig, bak, ovrl, p808 (1-5); None: not scored
    similarity: float | None  # cosine to the voice's d-vector; None: not scored (see notes)
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    unscored: tuple[str, ...] = ()  # why the render could not be scored (a scorer fault)
    stop_reason: StopReason | None = None  # how T2S stopped; None: not known (older renders)

    @property
    def verdict(self) -> Verdict:
        if self.failures:
            return "failed"
        if self.unscored:
            return "unscored"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def as_dict(self) -> dict[str, Any]:
        """The scores as the render cache keeps them (JSON)."""
        return {
            "verdict": self.verdict,
            "dnsmos": self.dnsmos,
            "similarity": self.similarity,
            "failures": list(self.failures),
            "notes": list(self.notes),
            "unscored": list(self.unscored),
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RenderQuality":
        stop = data.get("stop_reason")
        return cls(
            dnsmos=data.get("dnsmos"),
            similarity=data.get("similarity"),
            failures=tuple(data.get("failures") or ()),
            notes=tuple(data.get("notes") or ()),
            unscored=tuple(data.get("unscored") or ()),
            stop_reason=stop if stop in STOP_REASONS else None,
        )


def evaluate(
    settings: Settings,
    dnsmos: dict[str, float] | None,
    similarity: float | None,
    notes: tuple[str, ...] = (),
    *,
    faults: tuple[str, ...] = (),
    stop_reason: StopReason | None = None,
) -> RenderQuality:
    """The verdict of one render. ``faults``: scorers that raised (each a sentence saying which
    and why); ``stop_reason``: how its T2S generation ended."""
    failures: list[str] = []
    if stop_reason == "cap":
        failures.append(CAP_FAILURE)
    if dnsmos is not None and dnsmos["ovrl"] < settings.quality_min_dnsmos_ovrl:
        failures.append(f"dnsmos_ovrl {dnsmos['ovrl']:.2f} < {settings.quality_min_dnsmos_ovrl:g}")
    if similarity is not None and similarity < settings.quality_min_similarity:
        failures.append(f"similarity {similarity:.2f} < {settings.quality_min_similarity:g}")
    unscored = list(faults)
    if dnsmos is None and similarity is None and not unscored:
        unscored.append("no score could be taken")
    return RenderQuality(dnsmos, similarity, tuple(failures), tuple(notes), tuple(unscored), stop_reason)


def should_rerender(settings: Settings, render_attempt: int, quality: RenderQuality) -> bool:
    """Not a pass (failed or unscored), enforced, and re-renders left (render 1 plus
    ``quality_max_rerenders``)."""
    return (
        settings.quality_gate == "enforce"
        and not quality.passed
        and render_attempt <= settings.quality_max_rerenders
    )
