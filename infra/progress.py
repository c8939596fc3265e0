"""A one-line progress bar on standard error for the CLI (a plain line per change when standard
error is not a terminal, so logs stay readable)."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.last = ""
        self.tty = sys.stderr.isatty()

    def update(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        total = int(progress.get("segments_total") or 0)
        done = int(progress.get("segments_done") or 0)
        reused = int(progress.get("segments_reused") or 0)
        filled = round(self.width * done / total) if total else 0
        chapters = job.get("chapters") or []
        current = next((c for c in chapters if c["segments_done"] < c["segments_total"]), None)
        where = f" · chapter {current['index'] + 1}/{len(chapters)}" if current else ""
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} segments"
            f"{f' ({reused} reused)' if reused else ''}{where} · {job.get('status', '')}"
        )
        if line == self.last:
            return
        self.last = line
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()
