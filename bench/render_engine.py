"""Bench-only engine module (``VOXMILL_ENGINE=bench.render_engine``): the product engine with a
fixed generation length, because random weights never emit EOS. Each segment decodes
``tokens_per_phone`` x its target phones (engine option, default 2.0: about the rate of real
speech at 25 Hz), never less than the 11 steps before EOS is allowed. Nothing else differs."""

from __future__ import annotations

import dataclasses

from jobs.engine import SynthesisParams, VoiceFeatures
from jobs.settings import Settings
from workers.gpt.engine import GPTSoVITSSemantic, model_version
from workers.gpt.model import T2SRequest
from workers.gpt.model.config import MIN_STEPS_BEFORE_EOS
from workers.sovits.engine import create_acoustic_engine, create_voice_encoder

__all__ = ["create_acoustic_engine", "create_semantic_engine", "create_voice_encoder", "model_version"]


class FixedLengthSemantic(GPTSoVITSSemantic):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.tokens_per_phone = float(settings.engine_options.get("tokens_per_phone", 2.0))

    def request(
        self, text: str, language: str, voice: VoiceFeatures, params: SynthesisParams
    ) -> tuple[T2SRequest, list[int]]:
        request, target_ids = super().request(text, language, voice, params)
        steps = max(MIN_STEPS_BEFORE_EOS + 1, round(self.tokens_per_phone * len(target_ids)))
        sampling = dataclasses.replace(request.params, max_steps=steps, early_stop_num=-1)
        return dataclasses.replace(request, params=sampling), target_ids


def create_semantic_engine(settings: Settings) -> FixedLengthSemantic:
    return FixedLengthSemantic(settings)
