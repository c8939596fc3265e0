"""Content keys: the reading version is part of every key, so renders of an older reading of a
text are never reused for the current one."""

from __future__ import annotations

import uuid

import pytest

from jobs import keys

VOICE = uuid.UUID(int=1)


def test_reading_version_changes_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = keys.content_key("It rose 3.5%.", VOICE, "m1", {"seed": 1})
    assert before == keys.content_key("It rose 3.5%.", VOICE, "m1", {"seed": 1})
    monkeypatch.setattr(keys, "READING_VERSION", keys.READING_VERSION + "-next")
    assert keys.content_key("It rose 3.5%.", VOICE, "m1", {"seed": 1}) != before
