"""Engines and sessions. Created by callers from a URL, never at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str, pool_size: int = 5, connect_timeout_s: int | None = None, tcp_timeout_s: int | None = None
) -> Engine:
    """An engine tuned per backend: SQLite gets WAL and a busy timeout so the embedded mode's
    threads do not trip over each other; PostgreSQL gets pre-ping so a restarted server is
    survived without a failed request, and a connect timeout so an unreachable one fails fast.
    ``tcp_timeout_s``: a PostgreSQL connection whose peer stops answering (a network partition)
    fails after about this long instead of waiting out the kernel's retransmissions (~15 min):
    TCP keepalives for idle connections, ``tcp_user_timeout`` for a query sent into the void."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=_postgres_connect_args(connect_timeout_s, tcp_timeout_s),
    )


def _postgres_connect_args(connect_timeout_s: int | None, tcp_timeout_s: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {"connect_timeout": connect_timeout_s} if connect_timeout_s else {}
    if tcp_timeout_s:
        probe_s = max(1, tcp_timeout_s // 3)
        args.update(
            keepalives=1,
            keepalives_idle=probe_s,
            keepalives_interval=probe_s,
            keepalives_count=2,
            tcp_user_timeout=tcp_timeout_s * 1000,
        )
    return args


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session
