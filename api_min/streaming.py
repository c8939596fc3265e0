"""The audio of a synchronous render, produced while the job runs: each segment, once the post
stage has stored it (levelled to the job's loudness target), is read back, resampled to the
response's rate and written to a streaming encoder, with the same pause between segments as the
job's assembled file. The response iterates the encoder's output.

So the first segment is on the wire while later ones still render. The job's own assembled file
(levelled as one chapter, verified after decoding) is still made and stays at
``GET /v1/jobs/{id}/audio``; the stream is the segments as they are, not that file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
import numpy as np

from jobs.engine import Waveform
from jobs.runtime import Runtime
from jobs.sync import SyncRender
from workers.post.audio.pipeline import SEGMENT_GAP_S
from workers.post.audio.resample import resample
from workers.post.audio.stream import StreamEncoder

log = logging.getLogger("voxmill.api.streaming")


def segment_samples(data: bytes, rate: int, gap_before: bool) -> np.ndarray:
    """A stored segment (FLAC) → float32 mono at ``rate``, after a pause unless it is the first."""
    waveform = Waveform.from_audio_bytes(data)
    samples = resample(waveform.samples, waveform.sample_rate, rate)
    if not gap_before:
        return samples
    return np.concatenate([np.zeros(round(SEGMENT_GAP_S * rate), np.float32), samples])


class StreamInterrupted(RuntimeError):
    """The render failed after the response had started: the body is cut short, without its
    final chunk, which the client reads as an incomplete response."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"stream cut short: {cause}")
        self.cause = cause


class SegmentStream:
    """Feeds a render's segments into an encoder from a task of its own. ``start`` returns once
    the first segment is in the encoder, or raises what stopped it (a failure, the timeout), so
    the HTTP status can still say so; later failures end the stream with that error."""

    def __init__(self, runtime: Runtime, render: SyncRender, encoder: StreamEncoder) -> None:
        self.runtime = runtime
        self.render = render
        self.encoder = encoder
        self.segments = 0
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._pump = asyncio.create_task(self._run())
        try:
            await asyncio.shield(self._first)
        except BaseException:
            await self.close()
            raise

    async def _run(self) -> None:
        try:
            async for segment in self.render.segments():
                data = await anyio.to_thread.run_sync(self.runtime.storage.get, segment.audio_key)
                samples = await anyio.to_thread.run_sync(
                    segment_samples, data, self.encoder.sample_rate, self.segments > 0
                )
                await self.encoder.write(samples)
                self.segments += 1
                if not self._first.done():
                    self._first.set_result(None)
            await self.encoder.finish()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not self._first.done():
                self._first.set_exception(exc)
            else:
                log.warning("stream of job %s ended early: %s", self.render.job_id, exc)
                self.encoder.fail(exc)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The encoded bytes; the render is abandoned (its job cancelled) if they are not all
        read — the client went away, or the stream failed."""
        try:
            async for chunk in self.encoder.chunks():
                yield chunk
        finally:
            await self.close()

    async def body(self) -> AsyncIterator[bytes]:
        """``chunks()`` for a response that has started: a failure can no longer change the
        status, so it surfaces as ``StreamInterrupted`` (no error handler turns it into a body)."""
        try:
            async for chunk in self.chunks():
                yield chunk
        except Exception as exc:
            raise StreamInterrupted(exc) from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shielded: this also runs when the response task is being cancelled (client gone).
        with anyio.CancelScope(shield=True):
            if self._pump is not None and not self._pump.done():
                self._pump.cancel()
                with contextlib.suppress(BaseException):
                    await self._pump
            await self.encoder.close()
            await self.render.abandon()
