"""The GPT-SoVITS semantic engine behind the ``jobs.engine`` interface: text → phones (+ BERT
features for Chinese) → T2S → semantic tokens, conditioned on the voice's prompt as the official
inference does (prompt phones ++ target phones, prompt semantic tokens as the audio prefix).
Models are loaded once per process."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from jobs.engine import SemanticTokens, SynthesisParams, VoiceFeatures
from jobs.errors import PermanentJobError
from jobs.settings import Settings
from workers.assets import ModelPaths, model_version as assets_model_version
from workers.checkpoints import CheckpointError
from workers.gpt.model import SamplingParams, T2SRequest, Text2SemanticModel, generate
from workers.gpt.model.onnx_step import BoundStepSession, export_bound_step, quantize_int8
from workers.gpt.text import text_to_phones
from workers.gpt.text.bert import BertFeatureExtractor
from workers.gpt.text.segment import SENTENCE_MARKS
from workers.gpt.text.symbols import phone_ids_for

_PROMPT_CACHE_SIZE = 256
log = logging.getLogger("voxmill.gpt")
# A runaway guard the official inference lacks: normal speech takes about 2 semantic tokens
# (25 Hz) per phone, so 6 per phone plus a margin never cuts real speech short, but stops a model
# that never emits EOS (a bad fine-tune, or the random models of `voxmill demo --tiny`) long
# before the official 1500-step cap. Output is identical whenever the model stops by itself.
# A render stopped here is recorded with stop reason "cap" and fails the quality gate.
TOKENS_PER_PHONE_CAP = 6
TOKEN_CAP_MARGIN = 75


def _dtype(settings: Settings) -> torch.dtype:
    return torch.float16 if settings.precision == "fp16" and settings.device.startswith("cuda") else torch.float32


@lru_cache(maxsize=2)
def _load_t2s(path: Path, device: str, dtype: torch.dtype) -> Text2SemanticModel:
    return Text2SemanticModel.load(path, device=device, dtype=dtype)


@lru_cache(maxsize=2)
def _load_bert(path: Path, device: str, dtype: torch.dtype) -> BertFeatureExtractor:
    return BertFeatureExtractor.load(path, device=device, dtype=dtype)


def t2s_runtime(settings: Settings) -> str:
    """"onnx" or "torch": the ONNX Runtime step wins on CPU (bench/render.py), GPU stays torch."""
    if settings.t2s_runtime != "auto":
        return settings.t2s_runtime
    return "onnx" if settings.device == "cpu" else "torch"


def _bound_step(
    model: Text2SemanticModel, folder: Path, version: str, device: str, int8: bool = False
) -> BoundStepSession:
    """The exported decode step of ``model``, written once into ``folder`` (atomically, so
    workers starting together never read half a file) and loaded with torch's thread count."""
    dtype = str(model.dtype).removeprefix("torch.")
    target = folder / f"t2s-step-{version.replace(':', '-')}-{dtype}.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        export_bound_step(model, partial)
        os.replace(partial, target)
    if int8:
        quantized = target.with_name(target.name.replace(".onnx", "-int8.onnx"))
        if not quantized.is_file():
            partial = quantized.with_name(f"{quantized.name}.{os.getpid()}.partial")
            quantize_int8(target, partial)
            os.replace(partial, quantized)
        target = quantized
    return BoundStepSession(target, device=device, threads=torch.get_num_threads())


def with_final_mark(text: str, language: str) -> str:
    """The official inference ends every text with a sentence mark so the model stops cleanly."""
    text = text.strip("\n")
    if text and text[-1] not in SENTENCE_MARKS:
        text += "." if language == "en" else "。"
    return text


class GPTSoVITSSemantic:
    def __init__(self, settings: Settings, gpt_path: Path | None = None, version: str | None = None) -> None:
        """The default model (the files under models_dir), or a registered model's T2S file
        (``gpt_path``), loaded outside the module cache so the model LRU decides its lifetime."""
        paths = ModelPaths.from_settings(settings)
        dtype = _dtype(settings)
        try:
            self.bert = _load_bert(paths.bert, settings.device, dtype)
            if gpt_path is None:
                self.model = _load_t2s(paths.gpt, settings.device, dtype)
        except (CheckpointError, OSError, ValueError) as exc:
            raise PermanentJobError(str(exc), code="model_unavailable") from exc
        if gpt_path is not None:
            try:
                self.model = Text2SemanticModel.load(gpt_path, device=settings.device, dtype=dtype)
            except (CheckpointError, OSError, ValueError, RuntimeError, EOFError) as exc:
                raise PermanentJobError(f"{gpt_path}: {exc}", code="model_corrupt") from exc
        self.model_version = version or assets_model_version(paths)
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.step: BoundStepSession | None = None
        if t2s_runtime(settings) == "onnx":
            int8 = settings.t2s_quantize == "int8" and dtype == torch.float32
            try:
                self.step = _bound_step(self.model, settings.compiled_dir, self.model_version, settings.device, int8)
            except Exception:
                if settings.t2s_runtime == "onnx":  # asked for by name: fail loudly
                    raise
                log.exception("the ONNX T2S step could not be exported or loaded; decoding in torch")
        self._prompts: OrderedDict[tuple[str, str], tuple[list[int], torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def _phones_and_bert(self, text: str, language: str) -> tuple[list[int], torch.Tensor]:
        phonemized = text_to_phones(with_final_mark(text, language), language)
        if not phonemized.phone_ids:
            raise PermanentJobError(f"nothing to pronounce in {text!r}", code="no_phones")
        # A v1 model (512-row phone embedding) reads the 322-symbol v1 table, a prefix of v2's.
        try:
            ids = phone_ids_for(phonemized.phone_ids, self.model.config.phone_table)
        except ValueError as exc:
            raise PermanentJobError(str(exc), code="unsupported_phones") from exc
        return ids, self.bert.features_for(phonemized)

    def _prompt(self, voice: VoiceFeatures) -> tuple[list[int], torch.Tensor]:
        assert voice.prompt_text is not None
        key = (voice.prompt_text, voice.prompt_language)
        with self._lock:
            if key in self._prompts:
                self._prompts.move_to_end(key)
                return self._prompts[key]
        value = self._phones_and_bert(voice.prompt_text, voice.prompt_language)
        with self._lock:
            self._prompts[key] = value
            while len(self._prompts) > _PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        return value

    def request(self, text: str, language: str, voice: VoiceFeatures, params: SynthesisParams) -> tuple[T2SRequest, list[int]]:
        """The T2S request for one segment, and the target phones SoVITS will need."""
        target_ids, target_bert = self._phones_and_bert(text, language)
        prompted = voice.prompt_text is not None and voice.prompt_semantic is not None
        if prompted:
            prompt_ids, prompt_bert = self._prompt(voice)
            phones = prompt_ids + target_ids
            bert = torch.cat([prompt_bert, target_bert], dim=1)  # [1024, P_prompt + P_target]
            prompt = torch.as_tensor(np.asarray(voice.prompt_semantic), dtype=torch.long)
        else:
            phones, bert, prompt = target_ids, target_bert, None
        sampling = SamplingParams(
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            repetition_penalty=params.repetition_penalty,
            max_steps=min(SamplingParams().max_steps, TOKEN_CAP_MARGIN + TOKENS_PER_PHONE_CAP * len(target_ids)),
        )
        request = T2SRequest(
            phones=torch.as_tensor(phones, dtype=torch.long),
            bert=bert,
            prompt=prompt,
            seed=params.seed,
            params=sampling,
        )
        return request, target_ids

    def text_to_semantic(
        self, text: str, language: str, voice: VoiceFeatures, params: SynthesisParams
    ) -> SemanticTokens:
        return self.text_to_semantic_batch([(text, language)], voice, params)[0]

    @torch.inference_mode()
    def text_to_semantic_many(
        self, items: Sequence[tuple[str, str, VoiceFeatures, SynthesisParams]]
    ) -> list[SemanticTokens]:
        """Segments of any voices and settings in one batched T2S run (jobs.batching): prompts
        of different lengths are left-padded and masked, and each keeps its own sampling
        settings, seed and stop rule, so each gets the tokens it would get alone."""
        return self._generate([self.request(text, language, voice, params) for text, language, voice, params in items])

    @torch.inference_mode()
    def text_to_semantic_batch(
        self, texts: list[tuple[str, str]], voice: VoiceFeatures, params: SynthesisParams
    ) -> list[SemanticTokens]:
        """Several segments of one voice in one batched T2S run (each stops on its own)."""
        return self._generate([self.request(text, language, voice, params) for text, language in texts])

    def _generate(self, prepared: list[tuple[T2SRequest, list[int]]]) -> list[SemanticTokens]:
        results = generate(self.model, [request for request, _ in prepared], step=self.step)
        # webui_tokens: exactly what the official inference hands to SoVITS (see T2SResult).
        # Any stop but EOS (the runaway guard, early_stop_num, the official step cap) is "cap".
        return [
            SemanticTokens(
                tokens=result.webui_tokens.cpu().numpy().astype(np.int64),
                phones=np.asarray(ids, np.int64),
                stop_reason="eos" if result.stop_reason == "eos" else "cap",
            )
            for result, (_, ids) in zip(results, prepared)
        ]


def model_version(settings: Settings) -> str:
    return assets_model_version(ModelPaths.from_settings(settings))


def create_semantic_engine(settings: Settings) -> GPTSoVITSSemantic:
    return GPTSoVITSSemantic(settings)


def create_semantic_engine_for(settings: Settings, gpt_path: Path, version: str) -> GPTSoVITSSemantic:
    return GPTSoVITSSemantic(settings, gpt_path, version)
