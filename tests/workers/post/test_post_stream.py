"""Streaming encoders: bytes leave as soon as a segment is written (not at the end of the
stream), the streamed containers decode, and ``complete`` fills in the lengths."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess

import numpy as np
import pytest
import soundfile

from workers.post.audio.codecs import EncoderError
from workers.post.audio.stream import STREAM_FORMATS, StreamEncoder, complete, pcm16, wav_header


# Well past any header (ID3, OggS/OpusHead/OpusTags, fLaC, RIFF) and under a second of audio.
EARLY_BYTES = 2000


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def encode_in_two(fmt: str, rate: int) -> tuple[bytes, bytes]:
    """Write one second, collect what comes out before the stream is finished, then the rest."""
    encoder = StreamEncoder(STREAM_FORMATS[fmt], rate)
    await encoder.start()
    chunks = encoder.chunks()
    try:
        await encoder.write(tone(1.0, rate))
        # Only the first second has been written and the input is still open: what is read now
        # was emitted for it (past the container's header), not flushed at the end.
        early = b""
        while len(early) < EARLY_BYTES:
            early += await asyncio.wait_for(anext(chunks), timeout=30)
        await encoder.write(tone(1.0, rate))
        await encoder.finish()
        rest = b"".join([chunk async for chunk in chunks])
    finally:
        await encoder.close()
    return early, rest


@pytest.mark.requires_tools
@pytest.mark.parametrize("fmt,rate", [("mp3", 32000), ("opus", 48000), ("aac", 32000), ("flac", 32000), ("wav", 24000)])
def test_first_bytes_leave_before_the_stream_ends(fmt: str, rate: int) -> None:
    early, rest = asyncio.run(encode_in_two(fmt, rate))
    data = early + rest
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(rate), "pipe:1"],
        input=data, capture_output=True, check=True,
    ).stdout
    seconds = len(decoded) / 4 / rate
    assert abs(seconds - 2.0) < 0.1, seconds


def test_wav_and_flac_lengths_are_filled_in_when_complete() -> None:
    rate = 16000
    samples = tone(0.5, rate)
    streamed = wav_header(rate) + pcm16(samples)
    assert struct.unpack("<I", streamed[40:44])[0] == 0xFFFFFFFF
    whole = complete(STREAM_FORMATS["wav"], streamed, rate, len(samples))
    assert struct.unpack("<I", whole[40:44])[0] == 2 * len(samples)
    assert struct.unpack("<I", whole[4:8])[0] == 36 + 2 * len(samples)
    decoded, decoded_rate = soundfile.read(io.BytesIO(whole), dtype="int16")
    assert decoded_rate == rate and np.array_equal(decoded, np.frombuffer(pcm16(samples), "<i2"))


@pytest.mark.requires_tools
def test_streamed_flac_gets_its_sample_count() -> None:
    async def run() -> tuple[bytes, int]:
        encoder = StreamEncoder(STREAM_FORMATS["flac"], 32000)
        await encoder.start()
        await encoder.write(tone(0.7, 32000))
        await encoder.finish()
        data = b"".join([chunk async for chunk in encoder.chunks()])
        await encoder.close()
        return data, encoder.frames

    data, frames = asyncio.run(run())
    (packed,) = struct.unpack(">Q", data[18:26])
    assert packed & ((1 << 36) - 1) == 0  # streamed: "unknown"
    decoded, rate = soundfile.read(io.BytesIO(complete(STREAM_FORMATS["flac"], data, 32000, frames)), dtype="int16")
    assert rate == 32000 and np.array_equal(decoded, np.frombuffer(pcm16(tone(0.7, 32000)), "<i2"))


def test_pcm16_rounds_and_clips() -> None:
    values = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5 / 32767, -1.5 / 32767], np.float32)
    assert np.frombuffer(pcm16(values), "<i2").tolist() == [0, 32767, -32767, 32767, -32767, 0, -2]


def test_a_rate_the_codec_cannot_carry_is_refused() -> None:
    with pytest.raises(EncoderError, match="opus cannot carry 32000 Hz"):
        StreamEncoder(STREAM_FORMATS["opus"], 32000)
