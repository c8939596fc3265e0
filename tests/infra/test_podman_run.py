"""infra/compose/podman_run.py: the compose files as smoke.sh starts them with `podman run`.

Only the translation is checked here (no podman needed); smoke.sh runs the result.
"""

from pathlib import Path

import pytest

from infra.compose.podman_run import load, run_args

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "infra" / "compose" / "compose.yaml", REPO / "infra" / "compose" / "compose.offline.yaml"]


def _env(args: list[str]) -> dict[str, str]:
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "--env"]
    return dict(p.split("=", 1) for p in pairs)


def test_the_offline_sovits_pool_runs_the_cpu_image_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXMILL_WEBHOOK_SECRET", "s3cret")
    monkeypatch.delenv("VOXMILL_IMAGE", raising=False)
    args = run_args(load(FILES), "sovits-worker", "proj")
    env = _env(args)
    assert env["VOXMILL_DEVICE"] == "cpu" and env["VOXMILL_METRICS_PORT"] == "9102"
    assert env["VOXMILL_WEBHOOK_SECRET"] == "s3cret"  # inherited from the anchor, interpolated
    assert "localhost/voxmill:0.1.0" in args and "--gpus" not in args
    assert args[args.index("--volume") + 1] == "proj_models:/models:ro"
    assert args[-4:] == ["voxmill", "worker", "--queue", "sovits"]
    # `$$` is a literal dollar: the healthcheck reads the port inside the container.
    assert "${VOXMILL_METRICS_PORT:-9101}/metrics" in args[args.index("--health-cmd") + 1]


def test_offline_services_use_local_images_and_publish_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXMILL_WEBHOOK_SECRET", "x")
    monkeypatch.delenv("VOXMILL_PORT_8000", raising=False)
    model = load(FILES)
    for service in ("postgres", "redis", "s3"):
        images = [a for a in run_args(model, service, "p") if a.startswith("localhost/")]
        assert images == [f"localhost/voxmill-offline-{service}:bookworm"]
    assert "--publish" not in run_args(model, "api", "p")
    # Beat and migrate serve no port: the image's default (the API's) check is switched off.
    assert "--no-healthcheck" in run_args(model, "beat", "p") and "--health-cmd" not in run_args(model, "beat", "p")
    monkeypatch.setenv("VOXMILL_PORT_8000", "18000")
    api = run_args(model, "api", "p")
    assert api[api.index("--publish") + 1] == "127.0.0.1:18000:8000"


def test_a_missing_required_secret_stops_the_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOXMILL_WEBHOOK_SECRET", raising=False)
    with pytest.raises(SystemExit, match="VOXMILL_WEBHOOK_SECRET"):
        load(FILES)
