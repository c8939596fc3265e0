"""Chunked SoVITS decoding for token streaming (workers/sovits/model/streaming.py): the chunks
add up to the unstreamed decode of the same tokens, seamless at the joins by a measure that
catches a 2 ms dropout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workers.sovits.model import SoVITSModel, v2_config, write_random_checkpoint
from workers.sovits.model.streaming import SAMPLES_PER_TOKEN, StreamingDecoder, join_snr_db

CHUNKS = (8, 16, 16, 20)  # a small first chunk, as the stream starts with it
MIN_JOIN_SNR_DB = 20.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SoVITSModel:
    torch.set_num_threads(1)
    path = Path(tmp_path_factory.mktemp("sovits")) / "tiny.pth"
    write_random_checkpoint(path, v2_config(full_size=False), seed=0)
    return SoVITSModel.load(path)


def _streamed(model: SoVITSModel) -> tuple[np.ndarray, np.ndarray, StreamingDecoder, list[np.ndarray]]:
    g = torch.Generator().manual_seed(0)
    total = sum(CHUNKS)
    codes = torch.randint(0, 1024, (total,), generator=g)
    phones = torch.randint(1, 300, (1, 20), generator=g)
    style = torch.randn(1, model.config.gin_channels, 1, generator=g)
    reference = model.decode(codes.view(1, 1, -1), phones, style, noise_scale=0.0)[0, 0].numpy()
    decoder = StreamingDecoder(model, phones, style, noise_scale=0.0)
    parts, at = [], 0
    for n in CHUNKS:
        parts.append(decoder.push(codes[at : at + n].tolist(), final=at + n == total))
        at += n
    return np.concatenate(parts), reference, decoder, parts


def test_chunks_add_up_to_the_unstreamed_decode_and_join_seamlessly(model: SoVITSModel) -> None:
    streamed, reference, decoder, parts = _streamed(model)
    assert len(streamed) == len(reference) == sum(CHUNKS) * SAMPLES_PER_TOKEN
    # The first chunk is sent at once, less the 2 tokens held back for the first join.
    assert len(parts[0]) == (CHUNKS[0] - 2) * SAMPLES_PER_TOKEN
    assert len(decoder.joins) == len(CHUNKS) - 1
    span = 2 * SAMPLES_PER_TOKEN
    assert join_snr_db(streamed, reference, decoder.joins, span) >= MIN_JOIN_SNR_DB


def test_the_join_measure_catches_a_two_millisecond_dropout(model: SoVITSModel) -> None:
    streamed, reference, decoder, _ = _streamed(model)
    damaged = streamed.copy()
    at = decoder.joins[1] + SAMPLES_PER_TOKEN  # inside the second join's cross-fade
    damaged[at : at + 64] = 0.0  # 2 ms at 32 kHz
    assert join_snr_db(damaged, reference, decoder.joins, 2 * SAMPLES_PER_TOKEN) < 6.0
