"""The Kubernetes manifests (infra/k8s) and the compose topology (infra/compose), checked offline.

Core objects are validated strictly against the Kubernetes schemas that kubernetes-validate ships;
KEDA's ScaledObjects against the CRD fields in keda_scaledobject.schema.json. The rest are the
properties the deployment promises: one Deployment and one autoscaler per pool, the GPU pool on GPU
nodes and able to scale to zero, a termination grace longer than the task hard limit, no root.
"""

import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra.cli import build_parser
from jobs.celery_app import QUEUES
from jobs.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
KUBERNETES_VERSION = "1.33.0"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda_scaledobject.schema.json").read_text())


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomized() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _documents(K8S / name)]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _kustomized() if d["kind"] == kind}


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def test_every_manifest_file_is_in_the_kustomization_except_the_secret_example() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed == {"secret.example.yaml"}
    assert listed <= on_disk


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_core_objects_pass_strict_schema_validation(path: Path) -> None:
    checked = 0
    for doc in _documents(path):
        if doc["apiVersion"].startswith(("keda.sh/", "kustomize.config.k8s.io/")):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    if path.name not in ("autoscaling.yaml", "kustomization.yaml"):
        assert checked > 0


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = json.loads(json.dumps(_by_kind("Deployment")["voxmill-api"]))
    _pod(deployment)["terminationGracePeriod"] = 30  # not a field: ...Seconds
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_scaled_objects_match_keda_fields_and_the_schema_refuses_unknown_ones() -> None:
    scaled = _by_kind("ScaledObject")
    assert scaled
    for doc in scaled.values():
        jsonschema.validate(doc, KEDA_SCHEMA)
    broken = json.loads(json.dumps(next(iter(scaled.values()))))
    broken["spec"]["triggers"][0]["metadata"]["listname"] = "gpt"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KEDA_SCHEMA)


def test_each_pool_has_a_deployment_scaled_on_its_own_queue() -> None:
    deployments, scaled = _by_kind("Deployment"), _by_kind("ScaledObject")
    for queue in QUEUES:
        name = f"voxmill-worker-{queue}"
        args = _pod(deployments[name])["containers"][0]["args"]
        assert args[args.index("--queue") + 1] == queue
        so = scaled[name]
        assert so["spec"]["scaleTargetRef"]["name"] == name
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue
    assert scaled["voxmill-worker-sovits"]["spec"]["minReplicaCount"] == 0


def test_the_gpu_pool_requests_a_gpu_on_gpu_nodes_from_the_cuda_image() -> None:
    pod = _pod(_by_kind("Deployment")["voxmill-worker-sovits"])
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "voxmill-cuda"
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    for queue in ("gpt", "post"):
        other = _pod(_by_kind("Deployment")[f"voxmill-worker-{queue}"])["containers"][0]
        assert "nvidia.com/gpu" not in other["resources"].get("limits", {})


def test_workers_outlive_the_task_hard_limit_when_stopped() -> None:
    hard_limit = Settings().task_time_limit_s
    for queue in QUEUES:
        pod = _pod(_by_kind("Deployment")[f"voxmill-worker-{queue}"])
        assert pod["terminationGracePeriodSeconds"] > hard_limit


def test_every_pool_and_the_api_have_a_disruption_budget_that_selects_them() -> None:
    deployments = _by_kind("Deployment")
    budgets = _by_kind("PodDisruptionBudget")
    for name in ["voxmill-api", *(f"voxmill-worker-{q}" for q in QUEUES)]:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selecting = [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(selecting) == 1, name


def test_pods_run_as_non_root_with_models_read_only_and_probed() -> None:
    for name, deployment in _by_kind("Deployment").items():
        pod = _pod(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["mountPath"] == "/models":
                    assert mount["readOnly"] is True
            if name != "voxmill-beat":
                assert "livenessProbe" in container, name
    api = _pod(_by_kind("Deployment")["voxmill-api"])["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _commands() -> list[list[str]]:
    commands = []
    for doc in _kustomized():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") if "template" in spec else None
        for container in (pod or {}).get("containers", []):
            if "args" in container:
                commands.append(container["args"])
            for part in " ".join(container.get("command", [])[2:]).split("&&"):
                if part.strip():
                    commands.append(shlex.split(part))
    return commands


def test_every_voxmill_command_in_the_manifests_is_one_the_cli_knows() -> None:
    commands = [c for c in _commands() if c and c[0] == "voxmill"]
    assert {"db", "storage", "api", "worker", "beat", "flower"} <= {c[1] for c in commands}
    parser = build_parser()
    for command in commands:
        parser.parse_args(command[1:])
