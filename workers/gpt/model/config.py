"""T2S hyper-parameters, read from the ``config`` dict that official GPT ``*.ckpt`` files carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The official decoder projects 1024-wide BERT features (chinese-roberta-wwm-ext-large); the width
# is hard-wired there, not read from the config.
BERT_DIM = 1024
# Semantic tokens per second as the official inference counts them for ``early_stop_num``
# (``hz * max_sec``); it is 50 although the tokens themselves are 25 Hz.
HZ = 50
# The official loop runs at most this many decode steps per segment.
MAX_DECODE_STEPS = 1500
# The official loop drops the EOS column for this many first steps, so no segment ends sooner.
MIN_STEPS_BEFORE_EOS = 11
# Phone-embedding rows of the official T2S per generation: v1 (s1longer.yaml) 512, holding the
# 322 v1 symbols; v2 (s1longer-v2.yaml) 732. v2Pro/v2ProPlus pair with s1v3.ckpt, a v2-shaped T2S.
PHONEME_VOCAB_SIZES = {"v1": 512, "v2": 732, "v2Pro": 732, "v2ProPlus": 732}
V2_PHONEME_VOCAB = 732


@dataclass(frozen=True)
class T2SConfig:
    """The Text2Semantic decoder's shape. Defaults are the official v2 model (s1longer-v2.yaml)."""

    vocab_size: int = 1025  # 1024 semantic ids + EOS
    phoneme_vocab_size: int = 732  # v2 symbols; v1 checkpoints use 512
    embedding_dim: int = 512
    hidden_dim: int = 512
    num_heads: int = 16
    num_layers: int = 24
    eos: int = 1024
    max_sec: int = 54
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.eos != self.vocab_size - 1:
            raise ValueError(f"EOS must be the last id (vocab_size - 1), got EOS={self.eos}")
        if self.embedding_dim != self.hidden_dim:
            # Embeddings feed the transformer directly; the official code only works when equal.
            raise ValueError("embedding_dim must equal hidden_dim")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by {self.num_heads} heads")

    @property
    def ffn_dim(self) -> int:
        """The official feed-forward width is always 4 * hidden_dim; ``linear_units`` is ignored."""
        return 4 * self.hidden_dim

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def phone_table(self) -> str:
        """Which phone table the ids index: "v1" (322 symbols) for a vocabulary smaller than
        the v2 table's 732 rows, else "v2". The T2S file itself carries no version."""
        return "v1" if self.phoneme_vocab_size < V2_PHONEME_VOCAB else "v2"

    @classmethod
    def for_generation(cls, generation: str, **sizes: Any) -> "T2SConfig":
        """The official T2S shape of a generation (``sizes`` override, e.g. for tiny models)."""
        if generation not in PHONEME_VOCAB_SIZES:
            raise ValueError(f"unknown generation {generation!r}; one of {', '.join(PHONEME_VOCAB_SIZES)}")
        return cls(phoneme_vocab_size=PHONEME_VOCAB_SIZES[generation], **sizes)

    @property
    def early_stop_num(self) -> int:
        """Generated-token budget the official webui passes (``50 * max_sec``)."""
        return HZ * self.max_sec

    @classmethod
    def from_dict(cls, ckpt_config: dict[str, Any]) -> "T2SConfig":
        """Build from a checkpoint's ``config``: reads ``config["model"]`` and
        ``config["data"]["max_sec"]``, as the official inference does."""
        try:
            model = ckpt_config["model"]
            return cls(
                vocab_size=int(model["vocab_size"]),
                phoneme_vocab_size=int(model["phoneme_vocab_size"]),
                embedding_dim=int(model["embedding_dim"]),
                hidden_dim=int(model["hidden_dim"]),
                num_heads=int(model["head"]),
                num_layers=int(model["n_layer"]),
                eos=int(model["EOS"]),
                max_sec=int(ckpt_config.get("data", {}).get("max_sec", cls.max_sec)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"T2S config lacks a model field: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The two sections of an official config that inference reads (plus ``linear_units``,
        ``dropout`` and ``inference.top_k`` so the dict looks like the official one)."""
        return {
            "data": {"max_sec": self.max_sec},
            "model": {
                "vocab_size": self.vocab_size,
                "phoneme_vocab_size": self.phoneme_vocab_size,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "head": self.num_heads,
                "linear_units": self.ffn_dim,
                "n_layer": self.num_layers,
                "dropout": 0,
                "EOS": self.eos,
            },
            "inference": {"top_k": 15},
        }
