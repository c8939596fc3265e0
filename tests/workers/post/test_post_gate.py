"""The quality gate end to end (embedded: PostgreSQL, a local folder, every task in-process, the
test engine rendering real speech): a render whose T2S hit its token cap fails the gate; a render
no scorer could score is ``unscored``, never a pass; a segment reused from the render cache keeps
its render's verdict, scores and stop reason, in the API's segment view and in the CLI's line."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile
from prometheus_client import REGISTRY
from sqlalchemy import select

from api_min.routes.jobs import job_out
from api_min.uploads import prepare_reference
from db.models import Job, RenderAttempt, RenderCacheEntry, Segment
from infra.embedded import gate_verdict
from jobs import lifecycle
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.submission import JobRequest, submit_job, submit_voice
from tests.support.speech import SENTENCES, encode, speech_wav
from workers.post import gate

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
pytestmark = [
    pytest.mark.filterwarnings("ignore:Please import `binary_dilation`:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning"),
]


@pytest.fixture(scope="module")
def runtime(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    home = tmp_path_factory.mktemp("post-gate")
    samples, rate = speech_wav(SENTENCES[1])  # the reference's voice, other words
    recording = home / "render.wav"
    soundfile.write(recording, samples, rate)
    options = {
        "speech_wav": str(recording),
        "garbage_by_text": {"Garbled": [0, 1, 2]},
        "cap_by_text": {"Runaway": [0]},
    }
    settings = Settings(
        mode="embedded",
        home=home,
        database_url=pg_url,
        storage="local",
        storage_dir=home / "objects",
        engine="tests.support.engine",
        engine_options_json=json.dumps(options),
        quality_gate="score",
    )
    runtime = Runtime(settings)
    runtime.celery  # the eager app: every task runs in-process
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def voice(runtime: Runtime) -> tuple[uuid.UUID, uuid.UUID]:
    samples, rate = speech_wav(REFERENCE_TEXT)
    prepared = prepare_reference(encode(samples, rate, "flac"), runtime.settings, REFERENCE_TEXT)
    with runtime.transaction() as session:
        tenant_id = lifecycle.default_tenant(session).id
    row = submit_voice(runtime, tenant_id, "v", "en", prepared.transcript, prepared.payload, prepared.analysis)
    return tenant_id, row.id


@pytest.fixture()
def gate_mode(runtime: Runtime) -> Iterator[Settings]:
    yield runtime.settings
    runtime.settings.quality_gate = "score"


def render(runtime: Runtime, voice: tuple[uuid.UUID, uuid.UUID], text: str) -> Job:
    tenant_id, voice_id = voice
    request = JobRequest(text=text, voice_id=voice_id, language="en", output_format="wav", split_method="english_period")
    job, _ = submit_job(runtime, tenant_id, request)
    with runtime.transaction() as session:
        done = session.get(Job, job.id)
        assert done is not None and done.status == "succeeded", (done and done.status, done and done.error_message)
        session.expunge(done)
        return done


def segment_rows(runtime: Runtime, job: Job) -> list[Segment]:
    with runtime.transaction() as session:
        rows = list(session.scalars(select(Segment).where(Segment.job_id == job.id).order_by(Segment.index)))
        session.expunge_all()
        return rows


def render_rows(runtime: Runtime, job: Job) -> list[tuple[int, int, str | None, str | None]]:
    with runtime.transaction() as session:
        rows = session.scalars(
            select(RenderAttempt).where(RenderAttempt.job_id == job.id).order_by(RenderAttempt.attempt)
        ).all()
        return [(r.attempt, r.seed, r.verdict, r.stop_reason) for r in rows]


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_render_that_hits_the_token_cap_is_rerendered_when_enforced(
    runtime: Runtime, voice: tuple[uuid.UUID, uuid.UUID], gate_mode: Settings
) -> None:
    gate_mode.quality_gate = "enforce"
    capped_before = counter("voxmill_t2s_stops_total", reason="cap")
    job = render(runtime, voice, "Runaway generation on the first render.")
    # Render 1 ran into the cap (seed 0); render 2 (seed 1) stopped by itself and passed.
    assert render_rows(runtime, job) == [(1, 0, "failed", "cap"), (2, 1, "passed", "eos")]
    (segment,) = segment_rows(runtime, job)
    assert (segment.stop_reason, segment.quality_verdict, segment.quality_passed) == ("eos", "passed", True)
    assert counter("voxmill_t2s_stops_total", reason="cap") == capped_before + 1


def test_a_capped_render_is_recorded_as_failed_in_score_mode(
    runtime: Runtime, voice: tuple[uuid.UUID, uuid.UUID]
) -> None:
    job = render(runtime, voice, "Runaway generation, kept as it is.")
    assert render_rows(runtime, job) == [(1, 0, "failed", "cap")]
    out = job_out(runtime, job.id, job.tenant_id)
    (segment,) = out.segments
    assert (segment.stop_reason, segment.quality_verdict, segment.quality_passed) == ("cap", "failed", False)
    assert segment.renders[0].stop_reason == "cap" and segment.renders[0].verdict == "failed"
    assert out.quality is not None and out.quality.segments_t2s_cap == [0] and out.quality.segments_below_gate == [0]
    with runtime.transaction() as session:
        assert "T2S token cap" in gate_verdict(lifecycle.quality_summary(session, job.id), 1)


def test_a_reused_segment_keeps_its_verdict_and_scores(
    runtime: Runtime, voice: tuple[uuid.UUID, uuid.UUID]
) -> None:
    text = "Garbled words, every render of them. Garbled again, in a second sentence."
    first = render(runtime, voice, text)
    assert [s.quality_verdict for s in segment_rows(runtime, first)] == ["failed", "failed"]
    with runtime.transaction() as session:
        assert lifecycle.segments_below_gate(session, first.id) == [0, 1]

    again = render(runtime, voice, text)  # unchanged: every segment comes from the render cache
    out = job_out(runtime, again.id, again.tenant_id)
    assert out.progress.segments_reused == 2
    for segment in out.segments:
        assert segment.reused and segment.renders == []
        assert (segment.quality_passed, segment.quality_verdict, segment.stop_reason) == (False, "failed", "eos")
        assert segment.scores is not None and segment.scores.dnsmos is not None
        assert any(f.startswith("dnsmos_ovrl") for f in segment.scores.failures)
    assert out.quality is not None and out.quality.segments_below_gate == [0, 1]
    with runtime.transaction() as session:
        assert lifecycle.segments_below_gate(session, again.id) == [0, 1]
        line = gate_verdict(lifecycle.quality_summary(session, again.id), 2)
    assert "every segment passed" not in line and "0, 1 below the gate" in line


def _broken_scorer(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the scoring model failed to load")


def test_a_render_no_scorer_could_score_is_unscored_never_a_pass(
    runtime: Runtime, voice: tuple[uuid.UUID, uuid.UUID], gate_mode: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "A sentence the broken scorers cannot judge."
    gate_mode.quality_gate = "enforce"
    unscored_before = counter("voxmill_quality_renders_total", result="unscored")
    with monkeypatch.context() as broken:
        broken.setattr(gate, "dnsmos", _broken_scorer)
        broken.setattr(gate, "speaker_similarity", _broken_scorer)
        job = render(runtime, voice, text)
    # Enforced: each unscored render is re-rendered with the next seed, up to the limit.
    limit = 1 + gate_mode.quality_max_rerenders
    assert render_rows(runtime, job) == [(n, n - 1, "unscored", "eos") for n in range(1, limit + 1)]
    assert counter("voxmill_quality_renders_total", result="unscored") == unscored_before + limit
    (segment,) = job_out(runtime, job.id, job.tenant_id).segments
    assert (segment.quality_passed, segment.quality_verdict) == (False, "unscored")
    assert segment.scores is not None and any("RuntimeError" in why for why in segment.scores.unscored)
    with runtime.transaction() as session:
        entry = session.scalars(select(RenderCacheEntry).where(RenderCacheEntry.tenant_id == job.tenant_id)).all()
        assert "unscored" in {e.quality_verdict for e in entry}

    # The scorers work again: the unscored render is not served from the cache as clean, it is
    # rendered and scored again.
    again = render(runtime, voice, text)
    (segment,) = job_out(runtime, again.id, again.tenant_id).segments
    assert not segment.reused and segment.quality_verdict == "passed"
    assert [r[2] for r in render_rows(runtime, again)] == ["passed"]


def test_score_mode_keeps_an_unscored_render_and_says_so(
    runtime: Runtime, voice: tuple[uuid.UUID, uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate, "dnsmos", _broken_scorer)
    job = render(runtime, voice, "Scored in score mode by a broken model.")
    assert render_rows(runtime, job) == [(1, 0, "unscored", "eos")]
    out = job_out(runtime, job.id, job.tenant_id)
    assert out.quality is not None and out.quality.segments_unscored == [0]
    assert out.segments[0].quality_passed is False
    with runtime.transaction() as session:
        assert "could not be scored" in gate_verdict(lifecycle.quality_summary(session, job.id), 1)
    assert np.isfinite(out.segments[0].scores.similarity or 0.0)  # type: ignore[union-attr]
