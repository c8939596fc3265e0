"""Per-process resources, built lazily from ``Settings`` the first time they are needed: the
database engine and sessions, object storage, the Celery app and the engines. One ``Runtime``
per process; nothing here runs at import time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

import logging
import time

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory
from jobs.metrics import OBSERVERS
from jobs.settings import Settings
from jobs.storage import Storage, create_storage

if TYPE_CHECKING:
    from celery import Celery

    from jobs.batching import MicroBatcher, SemanticItem
    from jobs.engine import AcousticEngine, SemanticEngine, SemanticTokens, VoiceEncoder
    from jobs.model_cache import ModelEngines
    from jobs.models import ModelRef

AFTER_COMMIT = "voxmill_after_commit"
# Celery's eager mode keeps one process-wide "joining will block" flag that every eager
# apply_async and chain flips; two threads running eager work at once trip it ("Never call
# result.get() within a task!"). Embedded mode therefore runs after-commit work one thread at a
# time (re-entrant: eager tasks commit and enqueue in turn).
EAGER_LOCK = threading.RLock()
BROKER_ERRORS = (KombuOperationalError, RedisConnectionError, ConnectionError, OSError)
log = logging.getLogger("voxmill.runtime")


def after_commit(session: Session, callback: Callable[[], Any]) -> None:
    """Run ``callback`` once the session's current transaction has committed — how every enqueue
    is made, so that no message ever names a row a worker cannot see yet."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Monotonic time until which after-commit publishes are skipped (the broker just failed).
        self._broker_down_until = 0.0

    @cached_property
    def db_engine(self) -> Engine:
        return make_engine(
            self.settings.db_url,
            self.settings.database_pool_size,
            self.settings.database_connect_timeout_s,
            self.settings.database_tcp_timeout_s,
        )

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.db_engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success (then run the after-commit callbacks), roll back
        on error (and drop them)."""
        with self.sessions() as session:
            with session.begin():
                yield session
            callbacks = session.info.pop(AFTER_COMMIT, [])
            observers = session.info.pop(OBSERVERS, [])
        for observe in observers:  # metrics of committed changes (jobs.metrics)
            observe()
        for callback in callbacks:
            if time.monotonic() < self._broker_down_until:
                log.warning("broker down: enqueue after commit skipped; the sweeper will send it")
                continue
            try:
                with EAGER_LOCK if self.settings.embedded else contextlib.nullcontext():
                    callback()
            except BROKER_ERRORS as exc:
                # The change is committed; the row itself is the outbox. The sweeper finds it
                # and enqueues again once the broker is back.
                if not self.settings.embedded:
                    self._broker_down_until = time.monotonic() + self.settings.broker_outage_backoff_s
                log.warning("enqueue after commit failed (%s); the sweeper will re-send it", exc)

    @cached_property
    def storage(self) -> Storage:
        return create_storage(self.settings)

    @cached_property
    def celery(self) -> "Celery":
        from jobs.celery_app import create_celery_app

        return create_celery_app(self.settings, runtime=self)

    @cached_property
    def semantic_engine(self) -> "SemanticEngine":
        from jobs.engine import create_semantic_engine

        return create_semantic_engine(self.settings)

    @cached_property
    def semantic_batcher(self) -> "MicroBatcher[SemanticItem, SemanticTokens]":
        """Groups the gpt pool's ready segments into batched T2S runs (``gpt_batch_size`` > 1)."""
        from jobs.batching import semantic_batcher

        return semantic_batcher(self.semantic_engine, self.settings)

    @cached_property
    def acoustic_engine(self) -> "AcousticEngine":
        from jobs.engine import create_acoustic_engine

        return create_acoustic_engine(self.settings)

    @cached_property
    def voice_encoder(self) -> "VoiceEncoder":
        from jobs.engine import create_voice_encoder

        return create_voice_encoder(self.settings)

    @cached_property
    def models(self) -> "ModelEngines":
        """Registered models' engines, loaded on demand (``jobs.model_cache``)."""
        from jobs.model_cache import ModelEngines

        return ModelEngines(self.settings)

    def semantic_engine_for(self, model: "ModelRef | None") -> "SemanticEngine":
        return self.semantic_engine if model is None else self.models.semantic(model)

    def acoustic_engine_for(self, model: "ModelRef | None") -> "AcousticEngine":
        return self.acoustic_engine if model is None else self.models.acoustic(model)

    def voice_encoder_for(self, model: "ModelRef | None") -> "VoiceEncoder":
        return self.voice_encoder if model is None else self.models.voice_encoder(model)

    @cached_property
    def model_version(self) -> str:
        from jobs.engine import model_version

        return model_version(self.settings)

    def close(self) -> None:
        if "db_engine" in self.__dict__:
            self.db_engine.dispose()
