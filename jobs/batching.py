"""Batching across tasks inside one worker process: the pool's threads each hand in the item of
the message they hold and block; one runner thread groups what arrives into batches of up to
``max_size`` (any jobs, any voices), waiting at most ``wait_s`` after the first item of a batch,
and runs each batch with one call. Claims, completions, retries and acks stay per task, so a
kill -9 mid-batch leaves every message of the batch unacked and every segment redelivered.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from jobs.engine import SemanticEngine, SemanticTokens, SynthesisParams, VoiceFeatures
from jobs.settings import Settings

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchInfo:
    """Which batch an item ran in (recorded on the segment row) and how many items it held."""

    id: str
    size: int


class MicroBatcher(Generic[T, R]):
    """``submit`` blocks until the item's batch has run and returns its result (or raises the
    batch's exception). ``run`` gets the items of one batch and returns one result per item."""

    def __init__(self, run: Callable[[Sequence[T]], Sequence[R]], max_size: int, wait_s: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._run = run
        self.max_size = max_size
        self.wait_s = max(0.0, wait_s)
        self._queue: queue.Queue[tuple[T, Future[tuple[R, BatchInfo]]]] = queue.Queue()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, item: T) -> tuple[R, BatchInfo]:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
                self._thread.start()
        future: Future[tuple[R, BatchInfo]] = Future()
        self._queue.put((item, future))
        return future.result()

    def _collect(self) -> list[tuple[T, Future[tuple[R, BatchInfo]]]]:
        batch = [self._queue.get()]
        # The first item's wait bounds the batch's: a lone item never waits longer than wait_s.
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_size:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            info = BatchInfo(str(uuid.uuid4()), len(batch))
            try:
                results = self._run_checked([item for item, _ in batch])
            except Exception:
                # One bad item (text with nothing to pronounce, say) must fail only its own
                # task: run the items one by one, each task then fails or retries alone.
                for item, future in batch:
                    self._run_alone(item, future)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result((result, info))

    def _run_checked(self, items: list[T]) -> Sequence[R]:
        results = self._run(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batch of {len(items)} gave {len(results)} results")
        return results

    def _run_alone(self, item: T, future: "Future[tuple[R, BatchInfo]]") -> None:
        try:
            (result,) = self._run_checked([item])
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting task)
            future.set_exception(exc)
            return
        future.set_result((result, BatchInfo(str(uuid.uuid4()), 1)))


# One segment for the gpt stage: text, language, the voice's features, synthesis parameters.
SemanticItem = tuple[str, str, VoiceFeatures, SynthesisParams]


def render_many(engine: SemanticEngine, items: Sequence[SemanticItem]) -> list[SemanticTokens]:
    """One batched T2S run when the engine has one (``text_to_semantic_many``), else in turn."""
    many = getattr(engine, "text_to_semantic_many", None)
    if many is not None:
        return list(many(items))
    return [engine.text_to_semantic(*item) for item in items]


def semantic_batcher(engine: SemanticEngine, settings: Settings) -> MicroBatcher[SemanticItem, SemanticTokens]:
    return MicroBatcher(
        lambda items: render_many(engine, items), settings.gpt_batch_size, settings.batch_wait_ms / 1000
    )
