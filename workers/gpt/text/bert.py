"""Phone-level BERT features for T2S (chinese-roberta-wwm-ext-large), torch + transformers only.

Official recipe (``TextPreprocessor.get_bert_feature``): tokenize the normalised Chinese text
(one token per character), run the masked-LM model with ``output_hidden_states=True``, take
``hidden_states[-3]`` (the output of the third-to-last layer; index 22 of 25 for the 24-layer
model), drop [CLS]/[SEP], repeat row i ``word2ph[i]`` times, transpose -> (1024, P). Only zh
chunks get features; every other chunk gets zeros (1024, P_chunk). Chunks are concatenated
along phones.

We load ``AutoModelForMaskedLM`` like the official code. The hidden states do not depend on
the LM head, so the bare ``BertModel`` would give identical features; the masked-LM class is
kept so a stock checkpoint folder loads without key surgery or warnings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

if TYPE_CHECKING:
    from workers.gpt.text.frontend import PhonemizedText

FEATURE_DIM = 1024  # bert_proj input width in the T2S checkpoints


class BertFeatureExtractor:
    """Holds the tokenizer and model; :meth:`load` returns one ready to run (eval mode)."""

    def __init__(self, tokenizer: object, model: torch.nn.Module, device: torch.device) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> BertFeatureExtractor:
        """Load from a local folder only (never the hub)."""
        dev = torch.device(device)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForMaskedLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        model = model.to(dev).eval()
        hidden = int(model.config.hidden_size)
        if hidden != FEATURE_DIM:
            raise ValueError(f"BERT hidden size {hidden} != {FEATURE_DIM} expected by T2S")
        return cls(tokenizer, model, dev)

    @torch.inference_mode()
    def char_features(self, text: str) -> torch.Tensor:
        """(n_chars, 1024) float32: ``hidden_states[-3]`` without [CLS]/[SEP]."""
        inputs = self.tokenizer(text, return_tensors="pt")  # type: ignore[operator]
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model(**inputs, output_hidden_states=True)
        feats = out.hidden_states[-3][0, 1:-1].float().cpu()  # [n_tokens, 1024]
        return feats

    def phone_features(self, norm_text: str, word2ph: Sequence[int]) -> torch.Tensor:
        """(1024, sum(word2ph)): character rows repeated per phone."""
        if len(word2ph) != len(norm_text):
            raise ValueError(f"word2ph has {len(word2ph)} entries for {len(norm_text)} characters")
        feats = self.char_features(norm_text)
        if feats.shape[0] != len(norm_text):
            raise ValueError(
                f"tokenizer gave {feats.shape[0]} tokens for {len(norm_text)} characters of {norm_text!r}"
            )
        counts = torch.as_tensor(list(word2ph), dtype=torch.long)
        return feats.repeat_interleave(counts, dim=0).T.contiguous()  # [1024, P]

    def features_for(self, phonemized: PhonemizedText) -> torch.Tensor:
        """(1024, P_total) for all chunks: zh chunks from BERT, others zeros."""
        parts: list[torch.Tensor] = []
        for chunk in phonemized.chunks:
            if chunk.language == "zh" and chunk.word2ph is not None:
                parts.append(self.phone_features(chunk.norm_text, chunk.word2ph))
            else:
                parts.append(torch.zeros(FEATURE_DIM, len(chunk.phone_ids), dtype=torch.float32))
        if not parts:
            return torch.zeros(FEATURE_DIM, 0, dtype=torch.float32)
        return torch.cat(parts, dim=1)


_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_DEFAULT_TEST_CHARS = (
    "的一是不了人我在有他这中大来上个们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去"
    "行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从"
    "喜欢世界今气很错四五六七八九百千万零点机器习语音合苹果老虎凶猛买猫狗水火山"
)


def write_tiny_bert(directory: str | Path, chars: Iterable[str] | None = None,
                    num_layers: int = 3, seed: int = 0) -> Path:
    """Write a small random BERT masked-LM + char vocab usable by :class:`BertFeatureExtractor`.

    Hidden size is 1024 (what T2S expects); 3 layers so ``hidden_states[-3]`` is a real layer
    output; 2 heads and a 64-wide feed-forward keep it small. The vocab has one entry per
    character (plus punctuation), so every character tokenizes to exactly one token."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab: list[str] = list(_SPECIAL_TOKENS)
    seen = set(vocab)
    for ch in list(chars if chars is not None else _DEFAULT_TEST_CHARS) + list("!?…,.-，。！？"):
        if ch not in seen and not ch.isspace():
            vocab.append(ch)
            seen.add(ch)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}),
        encoding="utf-8",
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                    "cls_token": "[CLS]", "mask_token": "[MASK]"}),
        encoding="utf-8",
    )
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=FEATURE_DIM, num_hidden_layers=num_layers,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config).eval()
    model.save_pretrained(str(out))
    return out
