"""``voxmill submit``: a book sent to a running API over HTTP, followed with a progress bar,
its files downloaded when it succeeds."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from infra.embedded import UnsafeOutputName, output_name, output_path
from infra.progress import ProgressBar

TERMINAL = ("succeeded", "failed", "cancelled")


def _client(server: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=60)


def _voice(client: httpx.Client, voice: str, transcript: str | None, language: str) -> str:
    """A voice id: the name or id as given, or a reference file uploaded first."""
    path = Path(voice)
    if not path.is_file():
        return voice
    data = {"language": "en" if language == "auto" else language, "name": path.stem}
    if transcript:
        data["transcript"] = transcript
    response = client.post("/v1/voices", files={"audio": (path.name, path.read_bytes())}, data=data)
    if response.status_code != 202:
        raise SystemExit(f"voice upload refused: {response.text}")
    voice_id: str = response.json()["id"]
    while True:
        state = client.get(f"/v1/voices/{voice_id}").json()
        if state["status"] == "ready":
            return voice_id
        if state["status"] in ("failed", "deleted"):
            raise SystemExit(f"voice {voice_id} {state['status']}: {state.get('error')}")
        time.sleep(0.5)


def submit(
    server: str,
    input_path: str,
    voice: str,
    transcript: str | None,
    language: str,
    output_format: str,
    project: str | None,
    options: dict[str, Any],
    out_dir: Path | None,
    wait: bool = True,
    api_key: str | None = None,
    progress: bool = True,
    timeout_s: float = 24 * 3600,
) -> int:
    path = Path(input_path)
    with _client(server, api_key) as client:
        voice_ref = _voice(client, voice, transcript, language)
        form = {"voice": voice_ref, "language": language, "format": output_format, "options": json.dumps(options)}
        if project:
            form["project"] = project
        response = client.post("/v1/books", files={"file": (path.name, path.read_bytes())}, data=form)
        if response.status_code not in (200, 202):
            print(f"refused: {response.text}", file=sys.stderr)
            return 2
        job = response.json()
        job_url = f"{server.rstrip('/')}/v1/jobs/{job['id']}"
        print(f"job {job['id']}: {job_url}")
        if not wait:
            return 0
        bar = ProgressBar() if progress else None
        deadline = time.monotonic() + timeout_s
        while job["status"] not in TERMINAL and time.monotonic() < deadline:
            if bar is not None:
                bar.update(job)
            time.sleep(0.5)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        if bar is not None:
            bar.update(job)
            bar.close()
        if job["status"] != "succeeded":
            print(f"job {job['id']} {job['status']}: {job.get('error')}", file=sys.stderr)
            return 1
        files = sorted((a for a in job["artifacts"] if a["segment_index"] is None), key=lambda a: str(a["kind"]))
        print(f"rendered {job['progress']['segments_total']} segments ({job['progress']['segments_reused']} reused)")
        targets: dict[str, Path] = {}
        if out_dir is not None:
            # Names come from the server: every one must be a plain file of --out (or of its
            # chapters/ folder) before anything is written.
            try:
                for artifact in files:
                    targets[artifact["kind"]] = output_path(
                        out_dir, output_name(str(artifact["kind"]), str(artifact["key"]), path.stem)
                    )
            except UnsafeOutputName as exc:
                print(f"refusing the server's file names: {exc}; nothing was written", file=sys.stderr)
                return 3
        for artifact in files:
            url = f"{job_url}/files/{quote(str(artifact['kind']), safe='')}"
            if out_dir is None:
                print(f"  {artifact['kind']:12s} {url}")
                continue
            target = targets[artifact["kind"]]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(client.get(url).content)
            print(f"  {artifact['kind']:12s} {target}")
    return 0
