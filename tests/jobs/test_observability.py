"""The quality gate and observability on real parts: API + three worker pools + Flower as
subprocesses, PostgreSQL, Redis, S3 (moto). The test engine renders real speech in the voice's own
speaker; two segments render as noise for their first seeds, so the gate (product thresholds)
re-renders them, and one never passes. Then: the renders through ``GET /v1/jobs/{id}``, the named
histograms on ``/metrics`` of the API and of every pool, the three pools in Flower's HTTP API, and
job and segment ids in the workers' JSON logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from jobs.metrics import GpuCollector
from tests.support.services import Cluster, free_port, wait_for
from tests.support.speech import SENTENCES, encode, speech_wav

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT = "This sentence renders cleanly. Garbled words on the first render only. Hopeless words in every render."


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus endpoint: (name, sorted labels) → value."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def names(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {name for name, _ in samples}


def test_gate_rerenders_and_every_process_is_observable(cluster_factory: Any, tmp_path: Path) -> None:
    samples, rate = speech_wav(SENTENCES[1])  # the reference's speaker, other words
    recording = tmp_path / "render.wav"
    soundfile.write(recording, samples, rate)
    options = {"speech_wav": str(recording), "garbage_by_text": {"Garbled": [0], "Hopeless": [0, 1, 2]}}
    cluster: Cluster = cluster_factory(
        VOXMILL_ENGINE_OPTIONS_JSON=json.dumps(options),
        VOXMILL_QUALITY_GATE="enforce",  # product thresholds and re-render limit
    )
    ports = {queue: free_port() for queue in ("gpt", "sovits", "post")}
    for queue, port in ports.items():
        cluster.worker(queue, "--metrics-port", str(port))
    api = cluster.api()
    flower_port = free_port()
    cluster.env["FLOWER_UNAUTHENTICATED_API"] = "true"
    cluster.start("flower", "flower", "--port", str(flower_port))

    reference, ref_rate = speech_wav(REFERENCE_TEXT)
    created = httpx.post(
        f"{api}/v1/voices",
        files={"audio": ("me.wav", encode(reference, ref_rate, "wav"), "audio/wav")},
        data={"language": "en", "transcript": REFERENCE_TEXT},
        timeout=30,
    )
    assert created.status_code == 202, created.text
    voice_id = created.json()["id"]
    wait_for(lambda: httpx.get(f"{api}/v1/voices/{voice_id}").json()["status"] == "ready", 60, "the voice")

    response = httpx.post(
        f"{api}/v1/jobs", json={"text": TEXT, "voice_id": voice_id, "language": "en", "split": "english_period"}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(f"{api}/v1/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    body: dict[str, Any] = wait_for(finished, 120, f"job {job_id}", interval=0.2)

    # The job completes, and reports the segment that never passed.
    assert body["status"] == "succeeded", body
    clean, garbled, hopeless = body["segments"]
    assert [s["status"] for s in body["segments"]] == ["succeeded"] * 3
    assert [(r["attempt"], r["seed"], r["passed"]) for r in clean["renders"]] == [(1, 0, True)]
    assert [(r["attempt"], r["seed"], r["passed"]) for r in garbled["renders"]] == [(1, 0, False), (2, 1, True)]
    assert [(r["attempt"], r["seed"], r["passed"]) for r in hopeless["renders"]] == [
        (1, 0, False),
        (2, 1, False),
        (3, 2, False),
    ]
    assert (clean["quality_passed"], garbled["quality_passed"], hopeless["quality_passed"]) == (True, True, False)
    assert body["quality"] == {
        "segments_scored": 3,
        "segments_rerendered": 2,
        "segments_below_gate": [2],
        "segments_unscored": [],
        "segments_t2s_cap": [],
    }
    assert [(s["quality_verdict"], s["stop_reason"]) for s in body["segments"]] == [
        ("passed", "eos"),
        ("passed", "eos"),
        ("failed", "eos"),
    ]
    for render in (r for s in body["segments"] for r in s["renders"]):
        assert render["dnsmos"] is not None and set(render["dnsmos"]) == {"sig", "bak", "ovrl", "p808"}
        assert render["similarity"] is not None
        assert bool(render["failures"]) != render["passed"]
    assert any(f.startswith("dnsmos_ovrl") for f in garbled["renders"][0]["failures"])
    assert garbled["renders"][1]["dnsmos"]["ovrl"] > garbled["renders"][0]["dnsmos"]["ovrl"] + 1.0
    audio = httpx.get(f"{api}/v1/jobs/{job_id}/audio")
    assert audio.status_code == 200 and len(audio.content) > 32000

    # Every pool's exporter: its stage's latency histogram, and what it recorded.
    gpt = scrape(f"http://127.0.0.1:{ports['gpt']}/metrics")
    sovits = scrape(f"http://127.0.0.1:{ports['sovits']}/metrics")
    post = scrape(f"http://127.0.0.1:{ports['post']}/metrics")
    renders = 1 + 2 + 3
    assert value(gpt, "voxmill_stage_duration_seconds_count", stage="gpt") == renders
    assert value(gpt, "voxmill_stage_duration_seconds_count", stage="plan") == 1
    assert value(gpt, "voxmill_stage_wait_seconds_count", stage="gpt") == renders
    assert value(gpt, "voxmill_t2s_stops_total", reason="eos") == renders
    assert value(sovits, "voxmill_stage_duration_seconds_count", stage="sovits") == renders
    assert value(post, "voxmill_stage_duration_seconds_count", stage="post") == renders
    assert value(post, "voxmill_stage_duration_seconds_count", stage="assemble") == 1
    assert value(post, "voxmill_job_duration_seconds_count", status="succeeded") == 1
    assert value(post, "voxmill_job_duration_seconds_sum", status="succeeded") > 0
    assert value(post, "voxmill_segments_finished_total", status="succeeded") == 3
    assert value(post, "voxmill_segment_rerenders_total") == 3
    assert value(post, "voxmill_quality_renders_total", result="failed") == 4
    assert value(post, "voxmill_quality_renders_total", result="passed") == 2
    assert value(post, "voxmill_segment_dnsmos_count", score="ovrl") == renders
    assert value(post, "voxmill_segment_speaker_similarity_count") == renders
    assert value(sovits, "voxmill_cache_requests_total", cache="voice_features", result="miss") >= 1
    assert value(sovits, "voxmill_cache_requests_total", cache="voice_features", result="hit") >= 1
    # NVML: GPU series exactly where a GPU is visible, and no error either way.
    has_gpu = GpuCollector().available
    assert ("voxmill_gpu_memory_used_bytes" in names(sovits)) == has_gpu

    # The API: request latency per route template, submissions, and queue depth from Redis.
    api_samples = scrape(f"{api}/metrics")
    assert value(api_samples, "voxmill_jobs_submitted_total") == 1
    assert value(
        api_samples, "voxmill_http_request_duration_seconds_count", method="GET", route="/v1/jobs/{job_id}", status="200"
    ) >= 2
    assert {q: value(api_samples, "voxmill_queue_depth", queue=q) for q in ("gpt", "sovits", "post")} == {
        "gpt": 0.0,
        "sovits": 0.0,
        "post": 0.0,
    }
    assert {("voxmill_queue_depth", (("queue", q),)) for q in ("gpt", "sovits", "post")} <= set(api_samples)

    # Flower's HTTP API lists the three pools.
    def flower_workers() -> set[str] | None:
        try:
            listed = httpx.get(f"http://127.0.0.1:{flower_port}/api/workers", params={"refresh": "1"}, timeout=10)
        except httpx.HTTPError:
            return None
        pools = {name.split("@", 1)[0] for name in listed.json()} if listed.status_code == 200 else set()
        return pools if {"gpt", "sovits", "post"} <= pools else None

    assert wait_for(flower_workers, 60, "Flower to list the three pools", interval=1.0) >= {"gpt", "sovits", "post"}

    # Structured logs carry the job and segment ids (and the render) of the work in hand.
    post_log = next(p for p in cluster.processes if p.name == "worker-post").log()
    finished_lines = [
        entry
        for entry in (json.loads(line) for line in post_log.splitlines() if line.startswith("{"))
        if entry.get("msg") == "segment finished"
    ]
    assert len(finished_lines) == renders
    assert {e["job_id"] for e in finished_lines} == {job_id}
    assert len({e["segment_id"] for e in finished_lines}) == 3
    assert sorted(e["render"] for e in finished_lines) == [1, 1, 1, 2, 2, 3]
