"""Text -> phone ids: language split, per-language normalisation and G2P, v2 ids.

:func:`text_to_phones` is the official ``get_phones_and_bert`` without the BERT part (that
is :mod:`workers.gpt.text.bert`): split into language chunks, ``clean_text`` each chunk
(normalise, G2P, unknown phones -> ``UNK``), map to ids, concatenate; if the result has fewer
than 6 phones the text is redone with a leading "." (the official guard against near-empty
prompts). English chunks shorter than 4 phones get a leading ",", also as in the official.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from workers.gpt.text.en_g2p import g2p_en
from workers.gpt.text.en_norm import normalize_en
from workers.gpt.text.ja_g2p import g2p_ja, normalize_ja
from workers.gpt.text.langsplit import split_languages
from workers.gpt.text.symbols import cleaned_text_to_sequence, to_known_phones
from workers.gpt.text.zh_g2p import ZhG2P
from workers.gpt.text.zh_norm import normalize_zh

# Official "special" marks in Chinese text: replaced by a comma for G2P, and that comma's
# phone becomes a longer silence symbol.
_ZH_SILENCE_MARKS = (("￥", "SP2"), ("^", "SP3"))


@dataclass(frozen=True)
class ChunkPhones:
    """One language chunk after G2P. ``word2ph`` (zh only) has one entry per character of
    ``norm_text`` giving that character's phone count; None for en/ja."""

    language: str
    text: str
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None


@dataclass(frozen=True)
class PhonemizedText:
    """All chunks of one input, concatenated in order.

    ``word2ph`` concatenates the zh chunks' word2ph only (it lines up with the zh parts of
    ``norm_text``); per-chunk values, which is what BERT features need, are in ``chunks``."""

    text: str
    language: str
    chunks: tuple[ChunkPhones, ...]
    phones: list[str] = field(init=False)
    phone_ids: list[int] = field(init=False)
    norm_text: str = field(init=False)
    word2ph: list[int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phones", [p for c in self.chunks for p in c.phones])
        object.__setattr__(self, "phone_ids", [i for c in self.chunks for i in c.phone_ids])
        object.__setattr__(self, "norm_text", "".join(c.norm_text for c in self.chunks))
        object.__setattr__(self, "word2ph", [n for c in self.chunks for n in (c.word2ph or [])])


@lru_cache(maxsize=1)
def _default_zh_g2p() -> ZhG2P:
    return ZhG2P()


def clean_chunk(text: str, language: str, zh_g2p: ZhG2P | None = None) -> ChunkPhones:
    """Official ``clean_text`` for one chunk in ``zh``, ``en`` or ``ja``."""
    word2ph: list[int] | None = None
    if language == "zh":
        g2p = zh_g2p or _default_zh_g2p()
        silence = next(((m, s) for m, s in _ZH_SILENCE_MARKS if m in text), None)
        if silence is not None:
            text_for_g2p = text.replace(silence[0], ",")
            norm = normalize_zh(text_for_g2p)
            phones, word2ph = g2p(norm)
            phones = [silence[1] if p == "," else p for p in phones]
        else:
            norm = normalize_zh(text)
            phones, word2ph = g2p(norm)
        if len(phones) != sum(word2ph) or len(norm) != len(word2ph):
            raise AssertionError(f"word2ph does not line up with {norm!r}")
    elif language == "en":
        norm = normalize_en(text)
        phones = g2p_en(norm)
        if len(phones) < 4:
            phones = [","] + phones
    elif language == "ja":
        norm = normalize_ja(text)
        phones = g2p_ja(norm)
    else:
        raise ValueError(f"unsupported chunk language {language!r}")
    phones = to_known_phones(phones)
    return ChunkPhones(language, text, norm, phones, cleaned_text_to_sequence(phones), word2ph)


def normalize_text(text: str, language: str) -> str:
    """What the G2P reads for ``text``: each language chunk through its normaliser."""
    normalizers = {"zh": normalize_zh, "en": normalize_en, "ja": normalize_ja}
    return "".join(normalizers[c.language](c.text) for c in split_languages(text, language))


def text_to_phones(text: str, language: str, zh_g2p: ZhG2P | None = None) -> PhonemizedText:
    """Phonemise one segment. ``language``: "zh" (Chinese, embedded English allowed), "en",
    "ja" (Japanese, embedded English allowed) or "auto" (zh/ja/en by script)."""
    result = _phonemize(text, language, zh_g2p)
    if len(result.phone_ids) < 6:
        result = _phonemize("." + text, language, zh_g2p)
    return result


def _phonemize(text: str, language: str, zh_g2p: ZhG2P | None) -> PhonemizedText:
    chunks = tuple(clean_chunk(c.text, c.language, zh_g2p) for c in split_languages(text, language))
    return PhonemizedText(text=text, language=language, chunks=chunks)
