"""The compose topology (infra/compose) and the images (infra/containers), checked offline.

What is checked here is what the files promise; building the images and bringing the topology up
is infra/compose/smoke.sh's job (it needs podman and, for the first build, network and time).
"""

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from infra.cli import build_parser
from jobs.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "compose"
CONTAINERS = REPO / "infra" / "containers"
VOXMILL_SERVICES = ("api", "gpt-worker", "sovits-worker", "post-worker", "beat", "flower")
WORKERS = ("gpt-worker", "sovits-worker", "post-worker")


class _ComposeLoader(yaml.SafeLoader):
    """Compose's `!reset` tag (drop an inherited value) read as an empty value."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader subclass
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, Any]:
    return _load(COMPOSE / "compose.yaml")["services"]


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return int(match.group(1))


def test_the_whole_topology_is_there() -> None:
    assert set(_services()) == {
        "postgres", "redis", "s3", "migrate", *VOXMILL_SERVICES, "prometheus", "grafana",
    }


def test_voxmill_services_wait_for_the_one_shot_migration_which_also_creates_the_bucket() -> None:
    services = _services()
    for name in VOXMILL_SERVICES:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    steps = [shlex.split(part) for part in migrate["command"][2].split("&&")]
    assert [s[1:] for s in steps] == [["db", "upgrade"], ["storage", "init"]]
    for name, service in services.items():
        command = service.get("command")
        if command and command[0] == "voxmill":
            build_parser().parse_args(command[1:])


def test_the_gpu_pool_reserves_a_gpu_and_workers_outlive_the_task_hard_limit() -> None:
    services = _services()
    devices = services["sovits-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in WORKERS:
        assert _seconds(services[name]["stop_grace_period"]) > Settings().task_time_limit_s
        assert "healthcheck" in services[name]


def test_models_mount_read_only_and_long_running_services_are_checked() -> None:
    services = _services()
    for name in VOXMILL_SERVICES:
        assert "models:/models:ro" in services[name]["volumes"]
    for name in ("postgres", "redis", "s3", "api", *WORKERS):
        assert services[name]["healthcheck"]["test"], name


def test_prometheus_scrapes_the_services_compose_names() -> None:
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    hosts = {t.split(":")[0] for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert hosts <= set(_services())


def test_the_offline_override_builds_from_containerfiles_that_exist() -> None:
    override = _load(COMPOSE / "compose.offline.yaml")["services"]
    built = [s for s in override.values() if "build" in s]
    assert {"postgres", "redis", "s3"} <= set(override)
    for service in built:
        assert (REPO / service["build"]["dockerfile"]).is_file()
        assert service["build"]["args"]["BASE_IMAGE"].startswith("localhost/")


def test_images_run_as_non_root_with_a_healthcheck_pinned_torch_and_no_models() -> None:
    for name in ("Containerfile", "Containerfile.cuda"):
        text = (CONTAINERS / name).read_text()
        user = re.findall(r"^USER (\S+)", text, re.M)
        assert user and not user[-1].startswith(("0", "root")), name
        assert "HEALTHCHECK" in text
        assert re.search(r'TORCH_SPEC="torch==[\d.]+"', text)
        assert "/models" in text and not re.search(r"^COPY .*models", text, re.M)
        assert "COPY infra/containers/ca/" in text and "update-ca-certificates" in text
    assert (CONTAINERS / "ca" / ".keep").is_file()
