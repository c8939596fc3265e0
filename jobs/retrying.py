"""Riding out a short outage in-process: a state write retried while the database is
unreachable, an upload retried while object storage is, each with exponential backoff and jitter
and a deadline. Waiting here keeps finished work: the alternative, a task retry, redoes it.

Only errors that say "the service is not there right now" are retried; anything else is raised
at once, as is the last error when the deadline passes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from jobs.runtime import Runtime

T = TypeVar("T")
log = logging.getLogger("voxmill.retrying")


def is_database_unavailable(exc: BaseException) -> bool:
    """A lost or refused database connection (restart, failover, network), not a bad statement."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, (OperationalError, InterfaceError)):
        if isinstance(exc.orig, sqlite3.OperationalError):
            # SQLite reports a missing table or a syntax error as OperationalError too.
            return any(word in str(exc.orig) for word in ("locked", "busy"))
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def with_backoff(
    work: Callable[[], T],
    retryable: Callable[[BaseException], bool],
    *,
    deadline_s: float,
    base_s: float,
    cap_s: float,
    what: str,
) -> T:
    """``work()`` until it succeeds, a non-retryable error, or ``deadline_s`` has passed."""
    give_up_at = time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return work()
        except Exception as exc:
            delay = min(cap_s, base_s * (2 ** (attempt - 1)))
            delay = delay / 2 + random.uniform(0, delay / 2)
            if not retryable(exc) or time.monotonic() + delay > give_up_at:
                raise
            log.warning(
                "%s failed (%s: %s); retrying",
                what,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
                extra={"fields": {"attempt": attempt, "retry_in_s": round(delay, 2)}},
            )
            time.sleep(delay)


def write_with_retry(runtime: "Runtime", work: Callable[["Session"], T], what: str) -> T:
    """Run ``work`` in one transaction, again from the start while the database is unreachable.

    A repeat is safe because every write is a guarded transition: if a commit went through but
    its acknowledgement was lost, the repeat finds its guard false and changes nothing.
    """

    def once() -> T:
        with runtime.transaction() as session:
            return work(session)

    settings = runtime.settings
    return with_backoff(
        once,
        is_database_unavailable,
        deadline_s=settings.db_retry_deadline_s,
        base_s=settings.db_retry_backoff_s,
        cap_s=max(settings.db_retry_backoff_s, 5.0),
        what=what,
    )
