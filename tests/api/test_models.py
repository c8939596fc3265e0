"""Models as data on PostgreSQL, in-process (embedded mode: tasks inline, the test engine reading
the registered files' checksums so each model renders differently): the CLI and the tenant-scoped
admin API register, list and remove models; a voice names its model; a job records the model it
ran on, and the model is part of every content key, so switching a voice's model re-renders and
switching back is served from the render cache."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import Job, Model, Segment, VoiceFeatureSet
from infra.cli import main as voxmill
from jobs.runtime import Runtime
from tests.support.front import api, assert_error, embedded_settings, new_key, new_tenant
from tests.support.models import register, write_pair
from tests.support.speech import encode, speech_wav

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT = "The first sentence is short. The second one is a little longer. And a third!"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("models")
    return {"a": write_pair(root / "a", seed=0), "b": write_pair(root / "b", seed=1), "root": (root, root)}


@pytest.fixture(scope="module")
def reference() -> bytes:
    samples, rate = speech_wav(REFERENCE_TEXT)
    return encode(samples, rate, "wav")


@pytest.fixture()
def front(pg_url: str, tmp_path: Path, pairs: dict[str, tuple[Path, Path]]) -> Iterator[tuple[TestClient, Runtime]]:
    with api(embedded_settings(pg_url, tmp_path, models_dir=pairs["root"][0])) as (client, runtime, _):
        yield client, runtime


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def upload(client: TestClient, headers: dict[str, str], reference: bytes, model: str | None = None) -> dict[str, Any]:
    data = {"language": "en", "transcript": REFERENCE_TEXT, "name": "narrator", **({"model": model} if model else {})}
    response = client.post("/v1/voices", files={"audio": ("me.wav", reference, "audio/wav")}, data=data, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "ready", body
    return body


def render(client: TestClient, headers: dict[str, str], voice_id: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"text": TEXT, "voice_id": voice_id, "split": "punctuation"}, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = client.get(f"/v1/jobs/{response.json()['id']}", headers=headers).json()
    assert job["status"] == "succeeded", job
    return job


def content_keys(runtime: Runtime, job_id: str) -> list[str]:
    with runtime.transaction() as session:
        return list(
            session.scalars(
                select(Segment.content_key).where(Segment.job_id == uuid.UUID(job_id)).order_by(Segment.index)
            )
        )


def test_switching_a_voices_model_rerenders_and_switching_back_hits_the_cache(
    front: tuple[TestClient, Runtime], pairs: dict[str, tuple[Path, Path]], reference: bytes
) -> None:
    client, runtime = front
    tenant = new_tenant(runtime)
    alice = new_key(runtime, tenant)
    a = register(runtime, unique("a"), *pairs["a"], tenant_id=tenant)
    b = register(runtime, unique("b"), *pairs["b"], tenant_id=tenant)
    voice = upload(client, alice, reference, model=a.name)
    assert voice["model"] == a.name

    first = render(client, alice, voice["id"])
    total = first["progress"]["segments_total"]
    assert total >= 2 and first["progress"]["segments_reused"] == 0
    assert first["model"] == {
        "name": a.name,
        "generation": "v2",
        "gpt_sha256": a.gpt_sha256,
        "sovits_sha256": a.sovits_sha256,
    }
    assert render(client, alice, voice["id"])["progress"]["segments_reused"] == total  # cache hit

    switched = client.patch(f"/v1/voices/{voice['id']}", json={"model": b.name}, headers=alice)
    assert switched.status_code == 200 and switched.json()["model"] == b.name, switched.text
    on_b = render(client, alice, voice["id"])
    assert on_b["progress"]["segments_reused"] == 0  # every content key changed with the model
    assert on_b["model"]["name"] == b.name and on_b["model"]["sovits_sha256"] == b.sovits_sha256
    assert set(content_keys(runtime, on_b["id"])).isdisjoint(content_keys(runtime, first["id"]))
    a_audio = client.get(f"/v1/jobs/{first['id']}/audio", headers=alice).content
    b_audio = client.get(f"/v1/jobs/{on_b['id']}/audio", headers=alice).content
    assert a_audio != b_audio  # another model, other audio

    assert client.patch(f"/v1/voices/{voice['id']}", json={"model": a.name}, headers=alice).status_code == 200
    back = render(client, alice, voice["id"])
    assert back["progress"]["segments_reused"] == total  # switching back: cache hit again
    assert content_keys(runtime, back["id"]) == content_keys(runtime, first["id"])

    with runtime.transaction() as session:
        sets = session.scalars(select(VoiceFeatureSet).where(VoiceFeatureSet.voice_id == uuid.UUID(voice["id"]))).all()
        # Onboarding computed model a's features; the first job on b computed b's, once.
        assert sorted(s.sovits_sha256 for s in sets) == sorted([a.sovits_sha256, b.sovits_sha256])
        job = session.get(Job, uuid.UUID(on_b["id"]))
        assert job is not None and (job.model_name, job.model_gpt_sha256) == (b.name, b.gpt_sha256)

    # Back to the deployment default ("" clears the voice's model): the files under models_dir.
    cleared = client.patch(f"/v1/voices/{voice['id']}", json={"model": ""}, headers=alice)
    assert cleared.status_code == 200 and cleared.json()["model"] is None


def test_admin_api_is_tenant_scoped(
    front: tuple[TestClient, Runtime], pairs: dict[str, tuple[Path, Path]], reference: bytes
) -> None:
    client, runtime = front
    alice_tenant, bob_tenant = new_tenant(runtime), new_tenant(runtime)
    alice, bob = new_key(runtime, alice_tenant), new_key(runtime, bob_tenant)
    shared = register(runtime, unique("shared"), *pairs["b"])  # deployment-wide (CLI without --tenant)
    name = unique("mine")

    created = client.post("/v1/admin/models", json={"name": name, "gpt": "a/gpt.ckpt", "sovits": "a/sovits.pth"}, headers=alice)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["scope"] == "tenant" and body["generation"] == "v2"
    assert body["sovits_sha256"] == register_sums(pairs["a"][1]) and body["gpt_path"] == str(pairs["a"][0])
    assert_error(
        client.post("/v1/admin/models", json={"name": name, "gpt": "a/gpt.ckpt", "sovits": "a/sovits.pth"}, headers=alice),
        409,
        "model_exists",
    )
    # Files outside the models folder are refused: a tenant cannot make the service read them.
    assert_error(
        client.post("/v1/admin/models", json={"name": unique("x"), "gpt": "/etc/hostname", "sovits": "a/sovits.pth"}, headers=alice),
        422,
        "model_path_outside",
    )
    assert_error(
        client.post("/v1/admin/models", json={"name": unique("x"), "gpt": "a/gpt.ckpt", "sovits": "a/gpt.ckpt"}, headers=alice),
        422,
        "model_invalid",
    )

    def names(headers: dict[str, str]) -> dict[str, dict[str, Any]]:
        response = client.get("/v1/admin/models", headers=headers)
        assert response.status_code == 200, response.text
        return {m["name"]: m for m in response.json()["data"]}

    seen_by_alice, seen_by_bob = names(alice), names(bob)
    assert name in seen_by_alice and shared.name in seen_by_alice
    assert seen_by_alice[shared.name]["scope"] == "deployment" and seen_by_alice[shared.name]["gpt_path"] is None
    assert name not in seen_by_bob and shared.name in seen_by_bob

    # Bob cannot use, remove or see Alice's model; nobody removes the deployment's through the API.
    bob_voice = upload(client, bob, reference)
    assert_error(client.patch(f"/v1/voices/{bob_voice['id']}", json={"model": name}, headers=bob), 422, "model_not_found")
    assert_error(client.delete(f"/v1/admin/models/{name}", headers=bob), 404, "model_not_found")
    assert_error(client.delete(f"/v1/admin/models/{shared.name}", headers=alice), 404, "model_not_found")

    # A model in use by a voice stays until the voice lets go of it.
    voice = upload(client, alice, reference, model=name)
    assert_error(client.delete(f"/v1/admin/models/{name}", headers=alice), 409, "model_in_use")
    assert client.delete(f"/v1/voices/{voice['id']}", headers=alice).status_code == 204
    assert client.delete(f"/v1/admin/models/{name}", headers=alice).status_code == 204
    assert name not in names(alice)


def register_sums(path: Path) -> str:
    from jobs.models import file_sha256

    return file_sha256(path)


def test_cli_add_list_remove(
    pg_url: str,
    tmp_path: Path,
    pairs: dict[str, tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    front: tuple[TestClient, Runtime],
    reference: bytes,
) -> None:
    client, runtime = front
    monkeypatch.setenv("VOXMILL_DATABASE_URL", pg_url)
    monkeypatch.setenv("VOXMILL_ENGINE", "tests.support.engine")
    name = unique("narrator")
    gpt, sovits = pairs["b"]
    assert voxmill(["models", "add", name, "--gpt", str(gpt), "--sovits", str(sovits)]) == 0
    assert voxmill(["models", "add", name, "--gpt", str(gpt), "--sovits", str(sovits)]) == 1  # duplicate
    assert voxmill(["models", "add", unique("gone"), "--gpt", str(tmp_path / "none.ckpt"), "--sovits", str(sovits)]) == 1
    err = capsys.readouterr().err
    assert "already registered" in err and "does not exist" in err

    with runtime.transaction() as session:
        row = session.scalar(select(Model).where(Model.name == name, Model.tenant_id.is_(None)))
        assert row is not None and row.generation == "v2"
        assert (row.gpt_sha256, row.sovits_sha256) == (register_sums(gpt), register_sums(sovits))

    monkeypatch.setenv("VOXMILL_DEFAULT_MODEL", name)
    assert voxmill(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"{name} (default)\tdeployment\tv2\t{row.gpt_sha256[:12]}" in listed

    # A voice naming the model keeps it registered until the voice is gone.
    owner = new_key(runtime, new_tenant(runtime))
    voice = upload(client, owner, reference, model=name)
    assert voxmill(["models", "remove", name]) == 1
    assert "used by voices" in capsys.readouterr().err
    assert client.delete(f"/v1/voices/{voice['id']}", headers=owner).status_code == 204
    assert voxmill(["models", "remove", name]) == 0
    with runtime.transaction() as session:
        assert session.scalar(select(Model).where(Model.name == name)) is None


def test_default_model_renders_voices_without_one(
    pg_url: str, tmp_path: Path, pairs: dict[str, tuple[Path, Path]], reference: bytes
) -> None:
    """VOXMILL_DEFAULT_MODEL names the deployment's model: a voice without its own renders on it."""
    settings = embedded_settings(pg_url, tmp_path, models_dir=pairs["root"][0])
    with api(settings) as (_, setup, _app):
        default = register(setup, unique("house"), *pairs["a"])
    with api(embedded_settings(pg_url, tmp_path, models_dir=pairs["root"][0], default_model=default.name)) as (
        client,
        runtime,
        _,
    ):
        alice = new_key(runtime, new_tenant(runtime))
        voice = upload(client, alice, reference)
        assert voice["model"] is None
        job = render(client, alice, voice["id"])
        assert job["model"]["name"] == default.name and job["model"]["sovits_sha256"] == default.sovits_sha256


def test_a_project_follows_its_voices_model(
    front: tuple[TestClient, Runtime], pairs: dict[str, tuple[Path, Path]], reference: bytes
) -> None:
    """A book project renders on its voice's model, is up to date while that holds, and is
    re-rendered once when the voice switches model (not on every check)."""
    from jobs.books import BookRequest, submit_book
    from jobs.projects import regenerate

    client, runtime = front
    tenant = new_tenant(runtime)
    alice = new_key(runtime, tenant)
    a = register(runtime, unique("a"), *pairs["a"], tenant_id=tenant)
    b = register(runtime, unique("b"), *pairs["b"], tenant_id=tenant)
    voice = upload(client, alice, reference, model=a.name)
    request = BookRequest(
        source=b"# One\n\nA first chapter.\n", voice_id=uuid.UUID(voice["id"]), filename=f"{unique('tale')}.md"
    )
    first, _ = submit_book(runtime, tenant, request)
    with runtime.transaction() as session:
        row = session.get(Job, first.id)
        assert row is not None and row.status == "succeeded" and row.model_name == a.name

    def mine(rendered: dict[uuid.UUID, str]) -> list[str]:
        return [why for project_id, why in rendered.items() if project_id == first.project_id]

    assert mine(regenerate(runtime).rendered) == []  # up to date on model a
    assert client.patch(f"/v1/voices/{voice['id']}", json={"model": b.name}, headers=alice).status_code == 200
    assert mine(regenerate(runtime).rendered) == ["model version changed"]
    assert mine(regenerate(runtime).rendered) == []
    with runtime.transaction() as session:
        latest = session.scalars(select(Job).where(Job.project_id == first.project_id).order_by(Job.created_at.desc())).first()
        assert latest is not None and latest.model_name == b.name and latest.status == "succeeded"
