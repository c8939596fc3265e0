"""`voxmill storage init`, the deployment's one-shot bucket setup, run as the migrate job runs it."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.services import REPO_ROOT, S3Server


def _storage_init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "storage", "init"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def test_storage_init_creates_the_missing_bucket_and_is_idempotent(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = f"voxmill-init-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXMILL_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT), VOXMILL_HOME=str(tmp_path), VOXMILL_STORAGE="s3", VOXMILL_S3_BUCKET=bucket,
        VOXMILL_S3_ENDPOINT_URL=s3_server.endpoint, VOXMILL_S3_ACCESS_KEY_ID="test",
        VOXMILL_S3_SECRET_ACCESS_KEY="test", VOXMILL_S3_REGION="us-east-1",
    )
    buckets = lambda: {b["Name"] for b in s3_server.client().list_buckets()["Buckets"]}  # noqa: E731
    assert bucket not in buckets()
    for _ in range(2):
        done = _storage_init(env)
        assert done.returncode == 0, done.stderr
        assert f"bucket ready: {bucket}" in done.stdout
    assert bucket in buckets()
