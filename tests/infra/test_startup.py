"""Distributed processes refuse to start with the default webhook secret: the real ``voxmill
api``, ``worker`` and ``beat`` commands exit non-zero at once and say why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.services import REPO_ROOT


def start(command: list[str], secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXMILL_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "VOXMILL_MODE": "distributed"})
    # An unreachable broker and database: a process that got past the check would hang or fail
    # differently; one that is refused never reaches them.
    env.update({"VOXMILL_BROKER_URL": "redis://127.0.0.1:1/0", "VOXMILL_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:1/x"})
    if secret is not None:
        env["VOXMILL_WEBHOOK_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *command], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("command", "secret"),
    [
        (["api", "--port", "1"], None),
        (["api", "--port", "1"], "change-me"),
        (["api", "--port", "1"], "  "),
        (["worker", "--queue", "post"], "change-me"),
        (["beat"], "change-me"),
    ],
)
def test_distributed_processes_refuse_the_default_webhook_secret(command: list[str], secret: str | None) -> None:
    result = start(command, secret)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to start" in result.stderr and "VOXMILL_WEBHOOK_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
