"""The metrics module and what reads it: the Grafana dashboard and the Prometheus configuration
name only metrics voxmill exports; scrapes survive a dead broker and a missing GPU; a worker's
exporter serves the registry and a taken port does not stop the worker; the API's /metrics."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import yaml
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from api_min.app import create_app
from db.migrate import upgrade
from jobs import metrics
from jobs.celery_app import TaskName
from jobs.metrics import queue_depths
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.support.services import drop_broker_keys, free_port, unique_broker_prefix

INFRA = Path(__file__).resolve().parents[2] / "infra"
SCRAPE_TIME_FAMILIES = {
    "voxmill_queue_depth": "gauge",
    "voxmill_gpu_utilization_ratio": "gauge",
    "voxmill_gpu_memory_used_bytes": "gauge",
    "voxmill_gpu_memory_total_bytes": "gauge",
}
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("",), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name a voxmill process can expose (histograms: _bucket, _count, _sum)."""
    types = dict(re.findall(r"^# TYPE (voxmill_\w+) (\w+)$", generate_latest().decode(), re.M))
    types.update(SCRAPE_TIME_FAMILIES)
    return {name + suffix for name, kind in types.items() for suffix in SUFFIXES[kind]}


def test_dashboard_reads_only_exported_metrics() -> None:
    dashboard = json.loads((INFRA / "grafana" / "voxmill-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"voxmill_\w+", target["expr"])
    }
    assert used and used <= exported_names(), used - exported_names()
    # Each family the issue names has a panel.
    for family in (
        "voxmill_stage_duration_seconds_bucket",
        "voxmill_job_duration_seconds_bucket",
        "voxmill_queue_depth",
        "voxmill_jobs_finished_total",
        "voxmill_segments_finished_total",
        "voxmill_task_retries_total",
        "voxmill_cache_requests_total",
        "voxmill_segment_dnsmos_bucket",
        "voxmill_segment_speaker_similarity_bucket",
        "voxmill_gpu_utilization_ratio",
        "voxmill_gpu_memory_used_bytes",
    ):
        assert family in used, family


def test_prometheus_scrapes_the_api_and_every_pool_on_its_default_port() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["voxmill-api"] == ["api:8000"]
    for queue, port in metrics.DEFAULT_WORKER_PORTS.items():
        assert [t.rsplit(":", 1)[1] for t in targets[f"voxmill-{queue}"]] == [str(port)]


def test_no_broker_no_gpu_means_no_samples_and_no_error(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    runtime = Runtime(Settings(mode="distributed", home=tmp_path, broker_url=f"redis://127.0.0.1:{dead}/0"))
    assert list(metrics.QueueDepthCollector(runtime).collect()) == []
    gpu = metrics.GpuCollector()
    families = list(gpu.collect())
    assert bool(families) == gpu.available
    if gpu.available:  # a GPU host: one sample per device in each family
        assert {f.name for f in families} == set(SCRAPE_TIME_FAMILIES) - {"voxmill_queue_depth"}


def test_worker_exporter_serves_the_registry_and_a_taken_port_is_not_fatal() -> None:
    port = free_port()
    assert metrics.start_worker_exporter("post", port, "127.0.0.1") == port
    metrics.STAGE_SECONDS.labels("post").observe(0.2)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'voxmill_stage_duration_seconds_count{stage="post"}' in body
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert metrics.start_worker_exporter("post", taken.getsockname()[1], "127.0.0.1") is None
    assert metrics.start_worker_exporter("post", 0, "127.0.0.1") is None  # 0: off
    assert metrics.worker_port("sovits", None) == 9102 and metrics.worker_port("sovits", 9200) == 9200


def test_api_metrics_route(tmp_path: Path) -> None:
    settings = Settings(mode="embedded", home=tmp_path, engine="tests.support.engine", quality_gate="off")
    upgrade(settings.db_url)
    client = TestClient(create_app(settings))
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'voxmill_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}' in text
    assert 'route="/v1/jobs/{job_id}",status="404"' in text  # the template, not the URL
    assert "voxmill_queue_depth" not in text  # embedded: no broker to ask


def test_queue_depth_from_redis_counts_waiting_messages(broker_url: str, tmp_path: Path) -> None:
    prefix = unique_broker_prefix()
    runtime = Runtime(Settings(mode="distributed", home=tmp_path, broker_url=broker_url, broker_key_prefix=prefix))
    try:
        # Empty Redis queues have no key at all: a depth of 0, not an error (the sweeper reads it too).
        assert queue_depths(runtime) == {"gpt": 0, "sovits": 0, "post": 0}
        runtime.celery.signature(TaskName.PLAN_JOB.value, args=("no-such-job",)).apply_async()
        assert queue_depths(runtime) == {"gpt": 1, "sovits": 0, "post": 0}
        (family,) = metrics.QueueDepthCollector(runtime).collect()
        assert {s.labels["queue"]: s.value for s in family.samples} == {"gpt": 1, "sovits": 0, "post": 0}
    finally:
        drop_broker_keys(broker_url, prefix)
