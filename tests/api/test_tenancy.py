"""Tenants and API keys on PostgreSQL: another tenant's voices, jobs and audio answer 404 (never
403), a revoked key stops working on its next request, and voices can be listed, renamed and
deleted — a deleted voice's stored objects go, its rendered jobs keep their audio. Embedded mode
(tasks inline, test engine) so voices are ready and jobs finished when the request returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from infra.cli import main as voxmill
from jobs.keys import voice_object_key
from jobs.runtime import Runtime
from tests.support.front import api, assert_error, embedded_settings, new_key, new_tenant
from tests.support.speech import encode, speech_wav

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def reference() -> bytes:
    samples, rate = speech_wav(REFERENCE_TEXT)
    return encode(samples, rate, "wav")


@pytest.fixture()
def front(pg_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    with api(embedded_settings(pg_url, tmp_path)) as (client, runtime, _):
        yield client, runtime


def upload(client: TestClient, headers: dict[str, str], reference: bytes, name: str = "me") -> dict[str, Any]:
    response = client.post(
        "/v1/voices",
        files={"audio": ("me.wav", reference, "audio/wav")},
        data={"language": "en", "transcript": REFERENCE_TEXT, "name": name},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "ready", body
    return body


def test_another_tenants_ids_answer_404(front: tuple[TestClient, Runtime], reference: bytes) -> None:
    client, runtime = front
    alice = new_key(runtime, new_tenant(runtime))
    bob = new_key(runtime, new_tenant(runtime))
    voice = upload(client, alice, reference)
    job = client.post("/v1/jobs", json={"text": "Only for Alice.", "voice_id": voice["id"]}, headers=alice).json()
    assert job["status"] == "succeeded", job
    running = client.post(
        "/v1/jobs", json={"text": "Also Alice's.", "voice_id": voice["id"]}, headers={**alice, "Idempotency-Key": "k1"}
    )
    assert running.status_code == 202

    # Bob sees none of it, and cannot tell it exists.
    assert_error(client.get(f"/v1/voices/{voice['id']}", headers=bob), 404, "voice_not_found")
    assert_error(client.patch(f"/v1/voices/{voice['id']}", json={"name": "mine"}, headers=bob), 404, "voice_not_found")
    assert_error(client.delete(f"/v1/voices/{voice['id']}", headers=bob), 404, "voice_not_found")
    assert client.get("/v1/voices", headers=bob).json() == {"data": [], "next_cursor": None}
    assert_error(client.get(f"/v1/jobs/{job['id']}", headers=bob), 404, "job_not_found")
    assert_error(client.get(f"/v1/jobs/{job['id']}/audio", headers=bob), 404, "job_not_found")
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=bob), 404, "job_not_found")
    assert_error(
        client.post("/v1/jobs", json={"text": "Borrowed voice.", "voice_id": voice["id"]}, headers=bob),
        404,
        "voice_not_found",
    )
    # An idempotency key is per tenant: Bob's "k1" is not Alice's.
    other = client.post("/v1/jobs", json={"text": "x", "voice_id": voice["id"]}, headers={**bob, "Idempotency-Key": "k1"})
    assert_error(other, 404, "voice_not_found")

    # Alice still sees everything, unchanged.
    assert client.get(f"/v1/voices/{voice['id']}", headers=alice).json()["name"] == "me"
    assert client.get(f"/v1/jobs/{job['id']}/audio", headers=alice).status_code == 200
    assert [v["id"] for v in client.get("/v1/voices", headers=alice).json()["data"]] == [voice["id"]]


def test_requests_without_a_valid_key_are_refused(front: tuple[TestClient, Runtime]) -> None:
    client, runtime = front
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer vxm_aaaaaaaaaa_" + "x" * 32}):
        response = client.get("/v1/voices", headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    # A real prefix with the wrong secret is as unknown as any other key.
    good = new_key(runtime, new_tenant(runtime))["Authorization"]
    forged = good[: good.rindex("_") + 1] + "A" * 32
    assert_error(client.get("/v1/voices", headers={"Authorization": forged}), 401, "unauthorized")
    assert client.get("/v1/voices", headers={"Authorization": good}).status_code == 200
    assert client.get("/healthz").status_code == 200  # health needs no key


def test_keys_from_the_command_line_and_revocation(
    front: tuple[TestClient, Runtime], pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = front
    monkeypatch.setenv("VOXMILL_DATABASE_URL", pg_url)
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    assert voxmill(["keys", "create", "--tenant", tenant]) == 1  # no such tenant yet
    assert voxmill(["tenants", "create", tenant, "--max-queued-jobs", "5"]) == 0
    assert voxmill(["tenants", "create", tenant]) == 1  # names are unique
    capsys.readouterr()

    def create_key(label: str) -> tuple[str, str]:
        assert voxmill(["keys", "create", "--tenant", tenant, "--name", label]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        key = lines[-1]
        prefix = key.split("_")[1]
        assert lines[0] == f"created key {prefix} for tenant {tenant}"
        return prefix, key

    ci_prefix, ci_key = create_key("ci")
    laptop_prefix, laptop_key = create_key("laptop")
    ci = {"Authorization": f"Bearer {ci_key}"}
    laptop = {"Authorization": f"Bearer {laptop_key}"}
    assert client.get("/v1/voices", headers=ci).status_code == 200
    assert client.get("/v1/voices", headers=laptop).status_code == 200

    assert voxmill(["keys", "list", "--tenant", tenant]) == 0
    listing = capsys.readouterr().out
    assert ci_key not in listing and laptop_key not in listing  # shown once, never again
    rows = {line.split("\t")[0]: line.split("\t") for line in listing.strip().splitlines()[1:]}
    assert set(rows) == {ci_prefix, laptop_prefix}
    assert rows[ci_prefix][2] == "ci" and rows[ci_prefix][5] == "active"
    assert rows[ci_prefix][4] != "-"  # last used: the request above

    assert voxmill(["keys", "revoke", ci_prefix]) == 0
    assert voxmill(["keys", "revoke", ci_prefix]) == 1  # already revoked
    assert_error(client.get("/v1/voices", headers=ci), 401, "unauthorized")
    assert client.get("/v1/voices", headers=laptop).status_code == 200  # the other key lives on
    capsys.readouterr()
    assert voxmill(["keys", "list", "--tenant", tenant]) == 0
    assert "revoked" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith(ci_prefix))


def test_voices_list_rename_delete(front: tuple[TestClient, Runtime], reference: bytes) -> None:
    client, runtime = front
    tenant_id = new_tenant(runtime)
    me = new_key(runtime, tenant_id)
    voices = [upload(client, me, reference, name=f"v{i}") for i in range(3)]
    job = client.post("/v1/jobs", json={"text": "Rendered before the delete.", "voice_id": voices[0]["id"]}, headers=me)
    job_id = job.json()["id"]
    audio = client.get(f"/v1/jobs/{job_id}/audio", headers=me)
    assert audio.status_code == 200

    # Newest first, two pages of two.
    first = client.get("/v1/voices", params={"limit": 2}, headers=me).json()
    assert [v["name"] for v in first["data"]] == ["v2", "v1"] and first["next_cursor"]
    second = client.get("/v1/voices", params={"limit": 2, "cursor": first["next_cursor"]}, headers=me).json()
    assert [v["name"] for v in second["data"]] == ["v0"] and second["next_cursor"] is None
    assert_error(client.get("/v1/voices", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=me), 422, "invalid_cursor")

    renamed = client.patch(f"/v1/voices/{voices[0]['id']}", json={"name": "  Narrator  "}, headers=me)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Narrator"
    assert client.get(f"/v1/voices/{voices[0]['id']}", headers=me).json()["name"] == "Narrator"
    assert_error(client.patch(f"/v1/voices/{voices[0]['id']}", json={"name": "a\x00b"}, headers=me), 422, "invalid_name")
    assert_error(client.patch(f"/v1/voices/{voices[0]['id']}", json={"name": "   "}, headers=me), 422, "invalid_name")

    prefix = voice_object_key(tenant_id, uuid.UUID(voices[0]["id"]), "")
    assert len(runtime.storage.list(prefix)) == 2  # the reference clips and the features
    deleted = client.delete(f"/v1/voices/{voices[0]['id']}", headers=me)
    assert deleted.status_code == 204 and deleted.content == b""
    assert runtime.storage.list(prefix) == []
    assert_error(client.get(f"/v1/voices/{voices[0]['id']}", headers=me), 404, "voice_not_found")
    assert_error(client.delete(f"/v1/voices/{voices[0]['id']}", headers=me), 404, "voice_not_found")
    assert_error(
        client.post("/v1/jobs", json={"text": "Too late.", "voice_id": voices[0]["id"]}, headers=me),
        404,
        "voice_not_found",
    )
    assert [v["name"] for v in client.get("/v1/voices", headers=me).json()["data"]] == ["v2", "v1"]
    # The job rendered before the delete keeps its audio, byte for byte.
    again = client.get(f"/v1/jobs/{job_id}/audio", headers=me)
    assert again.status_code == 200 and again.content == audio.content
    # The other voices' objects are untouched.
    assert len(runtime.storage.list(voice_object_key(tenant_id, uuid.UUID(voices[1]["id"]), ""))) == 2


def test_voice_features_carry_a_speaker_embedding(front: tuple[TestClient, Runtime], reference: bytes) -> None:
    import numpy as np

    from db.models import Voice
    from jobs.engine import VoiceFeatures

    client, runtime = front
    voice = upload(client, new_key(runtime, new_tenant(runtime)), reference)
    with runtime.transaction() as session:
        row = session.get(Voice, uuid.UUID(voice["id"]))
        assert row is not None and row.features_key
        key = row.features_key
    features = VoiceFeatures.from_bytes(runtime.storage.get(key))
    assert features.speaker_embedding is not None and features.speaker_embedding.shape == (256,)
    assert np.linalg.norm(features.speaker_embedding) == pytest.approx(1.0, abs=1e-5)


def test_another_tenants_projects_files_books_and_sync_answer_404(
    front: tuple[TestClient, Runtime], reference: bytes
) -> None:
    client, runtime = front
    alice = new_key(runtime, new_tenant(runtime))
    bob = new_key(runtime, new_tenant(runtime))
    voice = upload(client, alice, reference, name="narrator")
    bob_voice = upload(client, bob, reference, name="bob")
    job = client.post("/v1/jobs", json={"text": "Only for Alice.", "voice_id": voice["id"]}, headers=alice).json()
    assert job["status"] == "succeeded", job
    book = client.post(
        "/v1/books",
        files={"file": ("tale.txt", b"Chapter One\n\nA short tale for Alice.\n", "text/plain")},
        data={"voice": voice["id"], "format": "wav"},
        headers=alice,
    )
    assert book.status_code == 202, book.text
    project_id = book.json()["project_id"]

    # Alice's project: not readable, changeable or renderable by Bob.
    assert_error(client.get(f"/v1/projects/{project_id}", headers=bob), 404, "project_not_found")
    assert_error(client.patch(f"/v1/projects/{project_id}", json={"params": {"speed": 1.2}}, headers=bob), 404, "project_not_found")
    assert_error(client.post(f"/v1/projects/{project_id}/render", headers=bob), 404, "project_not_found")
    # Alice's files, of a plain job and of the book's job.
    for job_id, kind in ((job["id"], "audio"), (book.json()["id"], "manifest"), (job["id"], "nothing")):
        assert_error(client.get(f"/v1/jobs/{job_id}/files/{kind}", headers=bob), 404, "job_not_found")
        assert_error(
            client.get(f"/v1/jobs/{job_id}/files/{kind}", params={"redirect": "true"}, headers=bob), 404, "job_not_found"
        )
    # Alice's voice, by id or by name, for Bob's book, Bob's project and the sync routes.
    for ref in (voice["id"], "narrator"):
        bob_book = client.post(
            "/v1/books", files={"file": ("b.txt", b"Bob's book.", "text/plain")}, data={"voice": ref}, headers=bob
        )
        assert_error(bob_book, 404, "voice_not_found")
        speech = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": ref}, headers=bob)
        assert speech.status_code == 404 and speech.json()["error"]["code"] == "voice_not_found", speech.text
    assert_error(client.post("/v1/tts", json={"text": "Hi.", "voice_id": voice["id"]}, headers=bob), 404, "voice_not_found")
    bob_project = client.post(
        "/v1/books", files={"file": ("b.txt", b"Bob's own book.", "text/plain")}, data={"voice": bob_voice["id"], "format": "wav"},
        headers=bob,
    )  # fmt: skip
    assert bob_project.status_code == 202, bob_project.text
    borrowed = client.patch(
        f"/v1/projects/{bob_project.json()['project_id']}", json={"voice_id": voice["id"]}, headers=bob
    )
    assert_error(borrowed, 404, "voice_not_found")

    # Alice still has it all.
    assert client.get(f"/v1/projects/{project_id}", headers=alice).status_code == 200
    assert client.get(f"/v1/jobs/{job['id']}/files/audio", headers=alice).status_code == 200
