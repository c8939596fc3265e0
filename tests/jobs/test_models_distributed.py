"""Registered models on real parts, with the product engine: API → PostgreSQL → Redis → the three
worker pools (subprocesses) → S3, on tiny random models in the official formats written here.
A v2 voice and a v2ProPlus voice render at the same time in the same pools, each job's row names
its model and generation, the Pro voice's features carry its speaker-verification embedding; a model whose file went missing or changed fails its own job with a clear code while the
pools go on serving the others."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.models import Job, Segment, VoiceFeatureSet
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.jobs.test_distributed import REFERENCE_TEXT, reference_wav, wait_job
from tests.support.models import register, write_pair
from tests.support.services import Cluster, wait_for
from jobs.engine import VoiceFeatures
from workers.assets import ModelPaths, make_tiny
from workers.sovits.model import write_random_sv_checkpoint
from workers.sovits.model.sv import SMALL_SV_CONFIG

TEXT = "Hello there."


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_tiny(root)  # HuBERT, BERT and the default pair under models_dir
    write_random_sv_checkpoint(ModelPaths.under(root).sv, seed=5)  # the deployment's SV model, for Pro voices
    write_pair(root / "narrator-a", seed=1)
    write_pair(root / "narrator-b", seed=2, generation="v2ProPlus")
    # Files are content-addressed in the workers (the same sha256 is the same weights, already
    # loaded or not), so the pairs that break get weights of their own.
    write_pair(root / "gone", seed=3)
    write_pair(root / "changed", seed=4)
    return root


def create_voice(api: str, model: str) -> str:
    response = httpx.post(
        f"{api}/v1/voices",
        files={"audio": ("me.wav", reference_wav(), "audio/wav")},
        data={"language": "en", "transcript": REFERENCE_TEXT, "model": model},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    voice_id: str = response.json()["id"]

    def ready() -> bool:
        body = httpx.get(f"{api}/v1/voices/{voice_id}").json()
        assert body["status"] != "failed", body
        return bool(body["status"] == "ready")

    wait_for(ready, 120, "the voice")
    return voice_id


def submit(api: str, voice_id: str, model: str | None = None) -> str:
    body: dict[str, Any] = {"text": TEXT, "voice_id": voice_id, "language": "en", "split": "none"}
    if model:
        body["model"] = model
    response = httpx.post(f"{api}/v1/jobs", json=body, timeout=30)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_two_models_side_by_side_and_a_broken_model_fails_only_its_job(
    cluster_factory: Any, tiny_root: Path, tmp_path: Path
) -> None:
    cluster: Cluster = cluster_factory(VOXMILL_ENGINE="gpt-sovits", VOXMILL_MODELS_DIR=str(tiny_root))
    runtime = Runtime(Settings(mode="distributed", database_url=cluster.env["VOXMILL_DATABASE_URL"], home=tmp_path))
    a = register(runtime, "narrator-a", tiny_root / "narrator-a/gpt.ckpt", tiny_root / "narrator-a/sovits.pth")
    b = register(runtime, "narrator-b", tiny_root / "narrator-b/gpt.ckpt", tiny_root / "narrator-b/sovits.pth")
    # Two more registrations whose files break after registration: one goes missing, one changes.
    for name in ("gone", "changed"):
        shutil.copytree(tiny_root / name, tmp_path / name)
    gone = register(runtime, "gone", tmp_path / "gone/gpt.ckpt", tmp_path / "gone/sovits.pth")
    changed = register(runtime, "changed", tmp_path / "changed/gpt.ckpt", tmp_path / "changed/sovits.pth")
    (tmp_path / "gone/sovits.pth").unlink()
    (tmp_path / "changed/gpt.ckpt").write_bytes((tiny_root / "narrator-a/gpt.ckpt").read_bytes())

    for queue in ("gpt", "sovits", "post"):
        cluster.worker(queue, "--lazy")  # registered models load on demand; the default is unused
    api = cluster.api()
    voice_a, voice_b = create_voice(api, a.name), create_voice(api, b.name)

    on_a, on_b = submit(api, voice_a), submit(api, voice_b)
    done_a, done_b = wait_job(api, on_a, timeout=240), wait_job(api, on_b, timeout=240)
    assert done_a["status"] == "succeeded", done_a
    assert done_b["status"] == "succeeded", done_b
    assert done_a["model"]["name"] == a.name and done_b["model"]["name"] == b.name

    # The missing SoVITS file: the job's voice features cannot be computed for it → model_missing.
    missing = wait_job(api, submit(api, voice_a, model=gone.name), timeout=120)
    assert missing["status"] == "failed" and missing["error"]["code"] == "model_missing", missing
    assert str(tmp_path / "gone/sovits.pth") in missing["error"]["message"]
    # The changed GPT file (voice b's features fit: same SoVITS file) fails in the gpt stage.
    corrupt = wait_job(api, submit(api, voice_b, model=changed.name), timeout=120)
    assert corrupt["status"] == "failed", corrupt
    assert {s["error"]["code"] for s in corrupt["segments"] if s["error"]} == {"model_corrupt"}

    # The pools went on: the same workers render both models again.
    again = wait_job(api, submit(api, voice_b), timeout=240)
    assert again["status"] == "succeeded", again
    assert all(p.alive() for p in cluster.processes)

    with runtime.transaction() as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_([uuid.UUID(on_a), uuid.UUID(on_b)])))}
        row_a, row_b = jobs[uuid.UUID(on_a)], jobs[uuid.UUID(on_b)]
        assert (row_a.model_name, row_a.model_gpt_sha256, row_a.model_sovits_sha256) == (a.name, a.gpt_sha256, a.sovits_sha256)
        assert (row_b.model_name, row_b.model_gpt_sha256, row_b.model_sovits_sha256) == (b.name, b.gpt_sha256, b.sovits_sha256)
        assert (row_a.model_generation, row_b.model_generation) == ("v2", "v2ProPlus")
        # In flight together: each started before the other finished (same pools, no swap).
        assert row_a.started_at and row_b.started_at and row_a.finished_at and row_b.finished_at
        assert row_a.started_at < row_b.finished_at and row_b.started_at < row_a.finished_at
        keys_a = set(session.scalars(select(Segment.content_key).where(Segment.job_id == row_a.id)))
        keys_b = set(session.scalars(select(Segment.content_key).where(Segment.job_id == row_b.id)))
        assert keys_a and keys_b and keys_a.isdisjoint(keys_b)
        # The features voice b's jobs ran with: those of b's SoVITS file, a v2ProPlus generation.
        pro_rows = session.scalars(
            select(VoiceFeatureSet).where(
                VoiceFeatureSet.voice_id == uuid.UUID(voice_b), VoiceFeatureSet.sovits_sha256 == b.sovits_sha256
            )
        ).all()
        assert [r.generation for r in pro_rows] == ["v2ProPlus"]
        feature_keys = [r.features_key for r in pro_rows]
    cluster_settings = Settings(**{k[8:].lower(): v for k, v in cluster.env.items() if k.startswith("VOXMILL_")})
    storage = Runtime(cluster_settings).storage
    pro_features = [VoiceFeatures.from_bytes(storage.get(k)) for k in feature_keys if k]
    assert pro_features
    for features in pro_features:  # one SV embedding per reference clip
        assert features.sv_embedding is not None
        assert features.sv_embedding.shape[0] >= 1 and features.sv_embedding.shape[1] == SMALL_SV_CONFIG.embedding_dim
    runtime.close()
