"""Streaming encoders for the synchronous endpoints: float samples go in as each segment is
ready, container bytes come out as soon as the encoder emits them, so the first segment can be on
the wire while the later ones are still being synthesised.

Only containers that are written front to back, never seeking back to fill in a length:

- ``wav``: 16-bit PCM WAV whose RIFF and data sizes are 0xFFFFFFFF ("unknown", as streaming
  servers write it; libsndfile, ffmpeg and browsers read to the end of the stream);
- ``pcm``: the same samples without a header (signed 16-bit little-endian, mono);
- ``mp3``: MP3 frames without a Xing/Info header (it would need the final length);
- ``opus``: Ogg Opus, pages of 200 ms rather than ffmpeg's default 1 s so audio leaves promptly;
- ``aac``: ADTS frames (AAC in MP4 needs its index written last, so it cannot be streamed);
- ``flac``: FLAC whose STREAMINFO says "total samples unknown", as the format allows; it
  carries the very 16-bit samples of ``wav`` and ``pcm``.

The lossy formats and FLAC run one ``ffmpeg`` process per stream (stdin raw float32, stdout the
container) with the bit-exact flags of ``codecs``, so one input always gives the same bytes.
``complete`` fills in the lengths when the whole stream is at hand (a JSON response).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from workers.post.audio import codecs
from workers.post.audio.codecs import AAC_RATES, MP3_RATES, OPUS_RATES, EncoderError

READ_CHUNK = 64 * 1024
UNKNOWN_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class StreamFormat:
    name: str
    mime: str
    sample_rates: tuple[int, ...] | None  # None: any rate
    codec: str | None = None  # ffmpeg encoder; None: 16-bit PCM written here
    muxer: str | None = None
    bitrate: str | None = None
    options: tuple[str, ...] = ()
    # What ffmpeg reads: float for the lossy codecs; FLAC gets the same 16-bit samples as WAV
    # and PCM (quantised here), so all three carry identical samples.
    pcm_input: bool = False

    def check_rate(self, rate: int) -> None:
        if self.sample_rates is not None and rate not in self.sample_rates:
            raise EncoderError(f"{self.name} cannot carry {rate} Hz; allowed: {', '.join(map(str, self.sample_rates))}")


STREAM_FORMATS: dict[str, StreamFormat] = {
    f.name: f
    for f in (
        StreamFormat("wav", "audio/wav", None),
        StreamFormat("pcm", "audio/pcm", None),
        StreamFormat("mp3", "audio/mpeg", MP3_RATES, "libmp3lame", "mp3", "128k", ("-write_xing", "0")),
        StreamFormat("opus", "audio/ogg", OPUS_RATES, "libopus", "ogg", "64k", ("-page_duration", "200000")),
        StreamFormat("aac", "audio/aac", AAC_RATES, "aac", "adts", "128k"),
        StreamFormat("flac", "audio/flac", None, "flac", "flac", None, pcm_input=True),
    )
}


def pcm16(samples: np.ndarray) -> bytes:
    """Float ``[n]`` in ±1.0 → signed 16-bit little-endian bytes (clipped, rounded)."""
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.round(x).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte mono 16-bit PCM WAV header; ``None`` writes the sizes as unknown."""
    data_size = UNKNOWN_SIZE if data_bytes is None else data_bytes
    riff_size = UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data" + struct.pack("<I", data_size)
    )


def complete(fmt: StreamFormat, data: bytes, sample_rate: int, frames: int) -> bytes:
    """The whole stream with the lengths a streamed one had to leave unknown filled in."""
    if fmt.name == "wav":
        return wav_header(sample_rate, len(data) - 44) + data[44:]
    if fmt.name == "flac" and data[:4] == b"fLaC":
        # STREAMINFO starts at byte 8; its bytes 10..17 hold rate(20) channels(3) bits(5) and
        # the 36-bit total sample count, 0 meaning unknown.
        (packed,) = struct.unpack(">Q", data[18:26])
        packed = (packed & ~((1 << 36) - 1)) | (frames & ((1 << 36) - 1))
        return data[:18] + struct.pack(">Q", packed) + data[26:]
    return data


_END = object()


class StreamEncoder:
    """One stream of mono float32 audio at ``sample_rate``. ``write`` the samples segment by
    segment, then ``finish``; iterate ``chunks()`` for the bytes (an encoder error, or one passed
    to ``fail``, is raised there). ffmpeg's output is drained by a task of its own, so a large
    write never waits on a full pipe."""

    def __init__(self, fmt: StreamFormat, sample_rate: int) -> None:
        fmt.check_rate(sample_rate)
        self.format = fmt
        self.sample_rate = sample_rate
        self.frames = 0  # samples written so far
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._header_sent = False

    async def start(self) -> None:
        if self.format.codec is None:
            return
        binary = shutil.which(codecs.FFMPEG)
        if binary is None:
            raise EncoderError(f"{codecs.FFMPEG!r} not found on PATH: {self.format.name} needs ffmpeg")
        rate = str(self.sample_rate)
        args = [
            "-hide_banner", "-nostdin", "-loglevel", "error",
            # No look-ahead on the input: by default ffmpeg reads seconds of it before encoding.
            "-probesize", "32", "-analyzeduration", "0",
            "-f", "s16le" if self.format.pcm_input else "f32le", "-ar", rate, "-ac", "1", "-i", "pipe:0",
            "-c:a", self.format.codec, *(["-b:a", self.format.bitrate] if self.format.bitrate else []),
            *self.format.options, "-ar", rate, "-map_metadata", "-1",
            "-fflags", "+bitexact", "-flags:a", "+bitexact", "-flush_packets", "1",
            "-f", self.format.muxer or "", "pipe:1",
        ]
        self._process = await asyncio.create_subprocess_exec(
            binary, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._drain(self._process))

    async def _drain(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and process.stderr is not None
        stderr = asyncio.create_task(process.stderr.read())
        while chunk := await process.stdout.read(READ_CHUNK):
            self._queue.put_nowait(chunk)
        code = await process.wait()
        message = (await stderr).decode("utf-8", "replace").strip()[-2000:]
        self._queue.put_nowait(_END if code == 0 else EncoderError(f"ffmpeg exited {code}: {message}"))

    async def write(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32)
        self.frames += len(x)
        if self.format.codec is None:
            header = b""
            if self.format.name == "wav" and not self._header_sent:
                header = wav_header(self.sample_rate)
            self._header_sent = True
            self._queue.put_nowait(header + pcm16(x))
            return
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(pcm16(x) if self.format.pcm_input else x.tobytes())
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise EncoderError(f"ffmpeg stopped reading its input: {exc}") from exc

    async def finish(self) -> None:
        if self._process is None:
            if self.format.name == "wav" and not self._header_sent:
                self._queue.put_nowait(wav_header(self.sample_rate))
            self._queue.put_nowait(_END)
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        await self._process.stdin.wait_closed()

    def fail(self, exc: BaseException) -> None:
        """End the stream with ``exc``: ``chunks()`` raises it after the bytes already out."""
        self._queue.put_nowait(exc)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            if item:
                yield item

    async def close(self) -> None:
        """Stop the encoder (a no-op once it has finished)."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
