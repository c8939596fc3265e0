"""Memory-bounded recycling of a worker process for the solo and thread pools, where Celery's
``worker_max_memory_per_child`` does nothing (it recycles prefork children only).

After each task the process checks its resident memory; past the limit it sends itself SIGTERM,
Celery's warm shutdown: it takes no new message, finishes the tasks in hand (thread pool) and
exits 0, and its supervisor (systemd ``Restart=always``) starts a fresh one. Late acks make this
safe: a message not yet finished is still in the broker.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
from typing import Any

from celery.signals import task_postrun

log = logging.getLogger("voxmill.recycling")


def resident_kb() -> int:
    """Current resident set size of this process in KiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def install(limit_kb: int) -> None:
    """Recycle this worker process once a task leaves it above ``limit_kb`` of resident memory."""
    if limit_kb <= 0:
        return
    requested = False

    def check(**_: Any) -> None:
        nonlocal requested
        used = resident_kb()
        if requested or used <= limit_kb:
            return
        requested = True
        log.warning(
            "resident memory above the limit: finishing the tasks in hand, then exiting for a restart",
            extra={"fields": {"resident_kb": used, "limit_kb": limit_kb}},
        )
        os.kill(os.getpid(), signal.SIGTERM)

    task_postrun.connect(check, weak=False)
