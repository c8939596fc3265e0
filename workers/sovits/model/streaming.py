"""Chunked SoVITS decoding for token streaming, after the official streaming mode
(``../shared/gpt-sovits/CHECKPOINTS.md`` section 8.3), and the measure of how seamless it is.

Each chunk re-runs the text encoder on every token so far (as the official does, so later
chunks see the whole left context), then runs flow and vocoder on a window that starts
``overlap`` tokens before the new ones. The window's first ``overlap`` tokens of audio are
cross-faded (Hann, weights summing to 1) with the tail held back from the previous chunk, and
every chunk but the last holds back its own last ``overlap`` tokens of audio for the next join.
Simplifications against the official: no latent-domain cross-fade and no SOLA offset search (the
windows are aligned to the token grid, so the overlap is already in phase); the prior noise is
drawn per chunk, so only ``noise_scale=0`` renders equal the unstreamed decode up to the joins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .synthesizer import SoVITSModel

SAMPLES_PER_TOKEN = 1280  # 32 kHz, 25 Hz tokens, speed 1


class StreamingDecoder:
    """``push(tokens)`` the tokens T2S produced since the last call; get back the audio that
    is final now (float32, 32 kHz). ``push(tokens, final=True)`` flushes the rest."""

    def __init__(
        self,
        model: SoVITSModel,
        phones: torch.Tensor,
        style: torch.Tensor,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
        overlap: int = 2,
    ) -> None:
        self.model, self.phones, self.style = model, phones, style
        self.noise_scale, self.generator, self.overlap = noise_scale, generator, overlap
        self.tokens: list[int] = []
        self.decoded = 0  # tokens whose audio was decoded
        self.tail = np.zeros(0, np.float32)  # audio of the last ``overlap`` decoded tokens, held back
        self.noise: torch.Tensor | None = None
        self.joins: list[int] = []  # sample offsets where a cross-fade starts (for the measure)
        self.emitted = 0

    @torch.inference_mode()
    def push(self, tokens: Sequence[int], final: bool = False) -> np.ndarray:
        self.tokens.extend(int(t) for t in tokens)
        end, start = len(self.tokens), self.decoded
        if end == start:
            out = self.tail if final else np.zeros(0, np.float32)
            if final:
                self.tail = np.zeros(0, np.float32)
            self.emitted += len(out)
            return out
        model = self.model
        codes = torch.tensor(self.tokens, dtype=torch.long, device=model.device).view(1, 1, -1)
        m, logs = model._prior(codes, self.phones.to(model.device), self.style.to(model.device, model.dtype))
        fresh = torch.randn((1, m.shape[1], 2 * (end - start)), generator=self.generator).to(m)
        self.noise = fresh if self.noise is None else torch.cat([self.noise, fresh], dim=2)
        window = max(0, start - self.overlap)
        frames = slice(2 * window, 2 * end)  # 50 Hz latent frames of the window
        wav = model._synthesize(
            m[:, :, frames], logs[:, :, frames], self.style.to(m), self.noise[:, :, frames], self.noise_scale
        )[0, 0].float().cpu().numpy()
        held = (start - window) * SAMPLES_PER_TOKEN
        if held:
            rising = np.sin(0.5 * np.pi * (np.arange(held) + 0.5) / held) ** 2  # Hann half, sums to 1
            self.joins.append(self.emitted)
            wav = np.concatenate([self.tail * (1 - rising) + wav[:held] * rising, wav[held:]]).astype(np.float32)
        self.decoded = end
        keep = 0 if final else min(self.overlap, end) * SAMPLES_PER_TOKEN
        out, self.tail = wav[: len(wav) - keep], wav[len(wav) - keep :]
        self.emitted += len(out)
        return out


def join_snr_db(
    streamed: np.ndarray, reference: np.ndarray, joins: Sequence[int], span: int, window: int = 64
) -> float:
    """The worst local signal-to-error ratio (dB) of ``streamed`` against the unstreamed
    ``reference`` over ``window``-sample windows (64 = 2 ms at 32 kHz) covering each join
    (``span`` samples from each join offset). A dropout or a click at a join shows up as a
    window near or below 0 dB however small it is against the whole file."""
    if len(streamed) != len(reference):
        raise ValueError(f"lengths differ: {len(streamed)} vs {len(reference)}")
    worst = float("inf")
    for join in joins:
        for at in range(max(0, join - window), min(len(reference), join + span + window), window // 2):
            ref = reference[at : at + window].astype(np.float64)
            err = streamed[at : at + window].astype(np.float64) - ref
            signal, noise = float(np.sum(ref**2)), float(np.sum(err**2))
            if signal > 0:
                worst = min(worst, 10 * np.log10(signal / max(noise, 1e-30)))
    return worst
