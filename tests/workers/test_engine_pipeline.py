"""The GPT-SoVITS engine behind the stage tasks, on tiny random models written in the official
formats by ``voxmill models make-tiny``: every stage real (frontend, BERT, T2S, HuBERT, SoVITS,
post), in embedded mode."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from sqlalchemy import select

from api_min.uploads import prepare_reference
from db.migrate import upgrade
from db.models import Artifact, Job, Voice
from jobs.engine import ReferenceClip, SynthesisParams
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.submission import JobRequest, submit_job, submit_voice
from tests.support.speech import encode, speech_wav
from workers.assets import make_tiny
from workers.post.audio import integrated_loudness

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_tiny(root)
    return root


@pytest.fixture()
def runtime(tmp_path: Path, tiny_models: Path) -> Iterator[Runtime]:
    # Random weights render noise, which never passes the gate: scores only, as `voxmill demo --tiny`.
    settings = Settings(
        mode="embedded", home=tmp_path, engine="gpt-sovits", models_dir=tiny_models, quality_gate="score"
    )
    upgrade(settings.db_url)
    runtime = Runtime(settings)
    runtime.celery
    yield runtime
    runtime.close()


def add_voice(runtime: Runtime, transcript: str | None) -> Voice:
    samples, rate = speech_wav(REFERENCE_TEXT)
    prepared = prepare_reference(encode(samples, rate, "flac"), runtime.settings, transcript)
    with runtime.transaction() as session:
        from jobs import lifecycle

        tenant_id = lifecycle.default_tenant(session).id
    voice = submit_voice(runtime, tenant_id, "v", "en", prepared.transcript, prepared.payload, prepared.analysis)
    with runtime.transaction() as session:
        fresh = session.get(Voice, voice.id)
        assert fresh is not None
        return fresh


def test_job_renders_through_every_real_stage(runtime: Runtime) -> None:
    voice = add_voice(runtime, REFERENCE_TEXT)
    assert voice.status == "ready", voice.failure_message
    assert voice.analysis and voice.analysis["reference_mode"] == "prompted"
    job, _ = submit_job(
        runtime,
        voice.tenant_id,
        JobRequest(
            text="Hello world, this is the first part. 你好，这是第二部分。",
            voice_id=voice.id,
            language="auto",
            output_format="flac",
            split_method="punctuation",
        ),
    )
    with runtime.transaction() as session:
        done = session.get(Job, job.id)
        assert done is not None and done.status == "succeeded", (done.error_code, done.error_message)
        assert done.segments_total >= 2 and done.model_version and done.model_version.startswith("gsv-v2:")
        key = session.scalar(
            select(Artifact.storage_key).where(Artifact.job_id == job.id, Artifact.segment_id.is_(None))
        )
    assert key is not None and key.endswith(".flac")
    samples, rate = soundfile.read(io.BytesIO(runtime.storage.get(key)))
    assert rate == 32000 and len(samples) > rate  # two segments of 25 Hz tokens, 1280 samples each
    assert abs(integrated_loudness(samples, rate) - (-16.0)) < 0.5


def test_same_seed_same_audio_and_reference_free_voices(runtime: Runtime) -> None:
    voice = add_voice(runtime, None)
    assert voice.status == "ready" and voice.transcript is None
    assert voice.analysis and voice.analysis["reference_mode"] == "reference_free"
    semantic = runtime.semantic_engine
    acoustic = runtime.acoustic_engine
    from jobs.engine import VoiceFeatures

    features = VoiceFeatures.from_bytes(runtime.storage.get(voice.features_key or ""))
    assert features.prompt_semantic is None and features.style.shape == (512,)
    params = SynthesisParams(seed=7, top_k=5, temperature=0.8)
    first = semantic.text_to_semantic("Deterministic output, please.", "en", features, params)
    again = semantic.text_to_semantic("Deterministic output, please.", "en", features, params)
    other = semantic.text_to_semantic("Deterministic output, please.", "en", features, SynthesisParams(seed=8, top_k=5, temperature=0.8))
    assert np.array_equal(first.tokens, again.tokens) and len(first.tokens) > 0
    assert not np.array_equal(first.tokens, other.tokens)
    wave_a = acoustic.synthesize(first, features, params)
    wave_b = acoustic.synthesize(first, features, params)
    assert np.array_equal(wave_a.samples, wave_b.samples)
    assert len(wave_a.samples) == 1280 * len(first.tokens)


def test_batched_t2s_equals_single_runs_under_greedy_decoding(runtime: Runtime) -> None:
    voice = add_voice(runtime, REFERENCE_TEXT)
    from jobs.engine import VoiceFeatures

    features = VoiceFeatures.from_bytes(runtime.storage.get(voice.features_key or ""))
    assert features.prompt_semantic is not None and len(features.prompt_semantic) > 0
    greedy = SynthesisParams(top_k=1)
    texts = [("One.", "en"), ("A somewhat longer second sentence.", "en"), ("第三句话。", "zh"), ("Four!", "en")]
    engine = runtime.semantic_engine
    batched = engine.text_to_semantic_batch(texts, features, greedy)  # type: ignore[attr-defined]
    singles = [engine.text_to_semantic(t, lang, features, greedy) for t, lang in texts]
    for b, s in zip(batched, singles):
        assert np.array_equal(b.tokens, s.tokens) and np.array_equal(b.phones, s.phones)


def test_generation_reports_how_it_stopped_and_a_capped_render_fails_the_gate(runtime: Runtime) -> None:
    """Real T2S on the tiny model: sampled, it stops by itself (EOS is reachable, so the tiny demo
    renders short); greedy without a repetition penalty never picks EOS and runs to the runaway
    guard: stop reason ``cap``,
    recorded on the segment and held against the render by the gate."""
    voice = add_voice(runtime, REFERENCE_TEXT)
    from jobs.engine import SemanticTokens, VoiceFeatures
    from workers.gpt.engine import TOKEN_CAP_MARGIN, TOKENS_PER_PHONE_CAP

    features = VoiceFeatures.from_bytes(runtime.storage.get(voice.features_key or ""))
    text = "A sentence of a plausible length for one segment."
    sampled = [runtime.semantic_engine.text_to_semantic(text, "en", features, SynthesisParams(seed=s)) for s in range(4)]
    assert [s.stop_reason for s in sampled] == ["eos"] * 4
    guard = TOKEN_CAP_MARGIN + TOKENS_PER_PHONE_CAP * len(sampled[0].phones)
    assert all(11 <= len(s.tokens) < guard for s in sampled)
    never_stops = SynthesisParams(top_k=1, repetition_penalty=1.0)
    greedy = runtime.semantic_engine.text_to_semantic(text, "en", features, never_stops)
    assert greedy.stop_reason == "cap" and len(greedy.tokens) >= guard - 1
    assert SemanticTokens.from_bytes(greedy.to_bytes()).stop_reason == "cap"

    job, _ = submit_job(
        runtime,
        voice.tenant_id,
        JobRequest(
            text=text, voice_id=voice.id, language="en", output_format="wav", params=never_stops.as_dict()
        ),
    )
    from db.models import RenderAttempt, Segment

    with runtime.transaction() as session:
        segment = session.scalars(select(Segment).where(Segment.job_id == job.id)).one()
        assert (segment.stop_reason, segment.quality_verdict, segment.quality_passed) == ("cap", "failed", False)
        render = session.scalars(select(RenderAttempt).where(RenderAttempt.segment_id == segment.id)).one()
        assert render.stop_reason == "cap" and any("cap" in f for f in render.failures)


def test_onnx_decoder_matches_torch(runtime: Runtime, tiny_models: Path, tmp_path: Path) -> None:
    voice = add_voice(runtime, REFERENCE_TEXT)
    from jobs.engine import VoiceFeatures
    from workers.sovits.engine import GPTSoVITSAcoustic

    features = VoiceFeatures.from_bytes(runtime.storage.get(voice.features_key or ""))
    params = SynthesisParams(noise_scale=0.0)
    semantic = runtime.semantic_engine.text_to_semantic("Compare the two runtimes.", "en", features, params)
    torch_settings = runtime.settings.model_copy(update={"sovits_runtime": "torch"})
    torch_wave = GPTSoVITSAcoustic(torch_settings).synthesize(semantic, features, params)
    onnx_settings = runtime.settings.model_copy(update={"sovits_runtime": "onnx"})
    onnx_wave = GPTSoVITSAcoustic(onnx_settings).synthesize(semantic, features, params)
    assert onnx_wave.samples.shape == torch_wave.samples.shape
    assert np.max(np.abs(onnx_wave.samples - torch_wave.samples)) < 1e-4


def test_reference_clips_round_trip() -> None:
    clips = [ReferenceClip(np.ones(64000, np.float32), np.ones(32000, np.float32)) for _ in range(3)]
    back = ReferenceClip.unpack(ReferenceClip.pack(clips))
    assert len(back) == 3 and all(np.array_equal(c.audio_16k, d.audio_16k) for c, d in zip(clips, back))


def test_offline_demo_names_every_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "demo", "--home", str(tmp_path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 3, result.stderr
    for name in (
        "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
        "s2G2333k.pth",
        "chinese-hubert-base/pytorch_model.bin",
        "chinese-roberta-wwm-ext-large/tokenizer.json",
    ):
        assert name in result.stderr
    assert "voxmill models pull" in result.stderr and "voxmill demo --tiny" in result.stderr


def test_make_tiny_writes_a_small_sv_model_for_pro_generations_only(tiny_models: Path, tmp_path: Path) -> None:
    from workers.assets import ModelPaths
    from workers.sovits.model.sv import SMALL_SV_CONFIG, SpeakerVerifier

    assert not ModelPaths.under(tiny_models).sv.exists()  # v2 voices never need it
    make_tiny(tmp_path, generation="v2Pro")
    sv_path = ModelPaths.under(tmp_path).sv
    assert sv_path == tmp_path / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt"
    verifier = SpeakerVerifier.load(sv_path)
    assert verifier.config == SMALL_SV_CONFIG
    assert verifier.embed(np.zeros(3200, dtype=np.float32) + 0.01).shape == (1, 2560)


def test_a_batch_across_voices_and_settings_equals_single_runs(runtime: Runtime) -> None:
    """What the gpt pool's batching (jobs/batching.py) runs: segments of different voices
    (prompted and reference-free), seeds and sampling settings in one T2S batch."""
    from jobs.engine import VoiceFeatures

    prompted = VoiceFeatures.from_bytes(runtime.storage.get(add_voice(runtime, REFERENCE_TEXT).features_key or ""))
    free = VoiceFeatures.from_bytes(runtime.storage.get(add_voice(runtime, None).features_key or ""))
    items = [
        ("A first segment of one job.", "en", prompted, SynthesisParams(seed=3, top_k=5)),
        ("Another job, another voice.", "en", free, SynthesisParams(seed=4, top_k=10, temperature=0.7)),
        ("Greedy, and short.", "en", prompted, SynthesisParams(top_k=1)),
    ]
    engine = runtime.semantic_engine
    batched = engine.text_to_semantic_many(items)  # type: ignore[attr-defined]
    singles = [engine.text_to_semantic(*item) for item in items]
    for b, s in zip(batched, singles):
        assert np.array_equal(b.tokens, s.tokens) and np.array_equal(b.phones, s.phones)
