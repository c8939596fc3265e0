"""In-process retries: only an unreachable database is waited for (never a bad statement), and
a retried call runs until it succeeds, its error is not retryable, or the deadline passes."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from jobs.retrying import is_database_unavailable, with_backoff
from tests.support.services import free_port


def test_unreachable_database_is_retryable_a_bad_statement_is_not() -> None:
    refused = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError) as down:
        with refused.connect():
            pass
    assert is_database_unavailable(down.value)
    sqlite = create_engine("sqlite://")
    with pytest.raises(OperationalError) as missing:
        with sqlite.connect() as connection:
            connection.execute(text("SELECT * FROM no_such_table"))
    assert not is_database_unavailable(missing.value)


def test_with_backoff_retries_until_success_and_stops_at_other_errors() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "done"

    retryable = lambda exc: isinstance(exc, ConnectionError)  # noqa: E731
    assert with_backoff(flaky, retryable, deadline_s=30, base_s=0.01, cap_s=0.02, what="flaky") == "done"
    assert len(calls) == 3

    calls.clear()

    def broken() -> str:
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        with_backoff(broken, retryable, deadline_s=30, base_s=0.01, cap_s=0.02, what="broken")
    assert len(calls) == 1

    calls.clear()

    def down() -> str:
        calls.append(1)
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError):
        with_backoff(down, retryable, deadline_s=0.2, base_s=0.05, cap_s=0.05, what="down")
    assert 1 < len(calls) < 20
