"""The two kinds of failure a task can report, and the stable codes clients see."""

from __future__ import annotations


class JobError(Exception):
    """Base of the failures voxmill reports; ``code`` is stable, ``message`` is for people."""

    code = "internal_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class RetryLater(JobError):
    """A transient failure (storage hiccup, busy GPU, lost connection): retried with exponential
    backoff and jitter until the attempt cap, counted in the database."""

    code = "transient_error"


class PermanentJobError(JobError):
    """A deterministic failure (bad input, missing voice, unsupported model): never retried."""

    code = "permanent_error"
