"""Mandarin G2P: normalised Chinese text -> v2 initials/finals with tones, and word2ph.

Same pipeline as the official ``chinese2.py`` without G2PW: split after punctuation, jieba
part-of-speech cut, the tone-sandhi merges, pypinyin initials + ``FINALS_TONE3`` per word,
tone sandhi, 儿化 tone fix, then each syllable becomes two phones (initial, final+tone) and
each punctuation mark one phone. ``word2ph[i]`` is the phone count of ``norm_text[i]``.

G2PW: the official default predicts polyphones with the G2PW ONNX model over the whole
sentence. Its runtime (model, tokenizer, polyphone tables) is not reproduced here; instead
``ZhG2P(pinyin_predictor=...)`` accepts any callable that returns one TONE3 pinyin per
character of a sentence (e.g. a G2PW wrapper) and is then used in place of pypinyin, exactly
where the official code uses G2PW. ``find_g2pw_model`` tells whether a model folder is present.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

from workers.gpt.text.symbols import PUNCTUATION
from workers.gpt.text.tone_sandhi import ToneSandhi

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # jieba imports the deprecated pkg_resources
    import jieba
    import jieba.posseg as psg

jieba.setLogLevel(logging.WARNING)

PinyinPredictor = Callable[[str], list[str]]

# ------------------------------------------------------------------ syllable -> phones
_ZERO_INITIAL_FINALS: dict[str, tuple[str, str]] = {
    # i- finals are written with y, u- finals with w, ü- finals with yu; a/e/o get a glottal
    # "initial" AA/EE/OO so every syllable is exactly two phones.
    "i": ("y", "i"), "ia": ("y", "a"), "ian": ("y", "En"), "iang": ("y", "ang"),
    "iao": ("y", "ao"), "ie": ("y", "E"), "in": ("y", "in"), "ing": ("y", "ing"),
    "io": ("y", "o"), "iong": ("y", "ong"), "iou": ("y", "ou"),
    "u": ("w", "u"), "ua": ("w", "a"), "uai": ("w", "ai"), "uan": ("w", "an"),
    "uang": ("w", "ang"), "uei": ("w", "ei"), "uen": ("w", "en"), "ueng": ("w", "eng"),
    "uo": ("w", "o"),
    "v": ("y", "v"), "van": ("y", "van"), "ve": ("y", "ve"), "vn": ("y", "vn"),
    # Syllabic nasals / interjections that have no two-phone spelling in the v2 inventory;
    # the official table has no entry for them (it would fail); nearest readings instead.
    "n": ("EE", "en"), "ng": ("EE", "eng"), "m": ("m", "u"), "ê": ("EE", "E"),
}
_FINAL_ABBREVIATIONS = {"uei": "ui", "iou": "iu", "uen": "un"}


@lru_cache(maxsize=2048)
def syllable_to_phones(initial: str, final: str) -> tuple[str, str] | None:
    """Strict pypinyin (initial, toneless final) -> (initial phone, final phone), or None.

    Reproduces the official opencpop-strict table: 'zh'+'i' -> ('zh', 'ir'), 'z'+'i' ->
    ('z', 'i0'), 'g'+'uei' -> ('g', 'ui'), ''+'ian' -> ('y', 'En'), ''+'an' -> ('AA', 'an')."""
    if initial:
        if final == "i" and initial in ("zh", "ch", "sh", "r"):
            return initial, "ir"
        if final == "i" and initial in ("z", "c", "s"):
            return initial, "i0"
        return initial, _FINAL_ABBREVIATIONS.get(final, final)
    if final in _ZERO_INITIAL_FINALS:
        return _ZERO_INITIAL_FINALS[final]
    if final[:1] == "a":
        return "AA", final
    if final[:1] == "e":
        return "EE", final
    if final[:1] == "o":
        return "OO", final
    return None


# ------------------------------------------------------------------ 儿化
_MUST_ERHUA = frozenset("小院儿 胡同儿 范儿 老汉儿 撒欢儿 寻老礼儿 妥妥儿 媳妇儿".split())
_NOT_ERHUA = frozenset(
    """
    虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 婴儿 婴幼儿
    连体儿 脑瘫儿 流浪儿 体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 孙儿 侄孙儿 女儿 男儿
    红孩儿 花儿 虫儿 马儿 鸟儿 猪儿 猫儿 狗儿 少儿
    """.split()
)


def _erhua(initials: list[str], finals: list[str], word: str, pos: str) -> tuple[list[str], list[str]]:
    """儿 at the end of a word takes the tone of the syllable before it (official rules)."""
    finals = list(finals)
    if finals and len(word) == len(finals) and word[-1] == "儿" and finals[-1] == "er1":
        finals[-1] = "er2"
    if word not in _MUST_ERHUA and (word in _NOT_ERHUA or pos in {"a", "j", "nr"}):
        return initials, finals
    if len(finals) != len(word):
        return initials, finals
    if (len(word) >= 2 and word[-1] == "儿" and finals[-1] in {"er2", "er5"}
            and word[-2:] not in _NOT_ERHUA):
        finals[-1] = "er" + finals[-2][-1]
    return initials, finals


# ------------------------------------------------------------------ G2P
_PUNCT = set(PUNCTUATION)
_RE_SENTENCE = re.compile(r"(?<=[" + "".join(re.escape(p) for p in PUNCTUATION) + r"])\s*")
_RE_LATIN = re.compile(r"[a-zA-Z]+")


def find_g2pw_model(model_dir: str | Path | None) -> Path | None:
    """The G2PW ONNX file in ``model_dir`` if present (official layout: ``g2pW.onnx``)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / "g2pW.onnx"
    return path if path.is_file() else None


class ZhG2P:
    """Normalised Chinese text -> (phones, word2ph)."""

    def __init__(self, pinyin_predictor: PinyinPredictor | None = None) -> None:
        self._predict = pinyin_predictor
        self._sandhi = ToneSandhi()

    def _word_pinyin(self, word: str, sentence_pinyin: list[str] | None,
                     offset: int) -> tuple[list[str], list[str]]:
        if sentence_pinyin is None:
            initials = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.INITIALS)
            finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
            return list(initials), list(finals)
        initials, finals = [], []
        for py in sentence_pinyin[offset: offset + len(word)]:
            if py[:1].isalpha():
                initials.append(to_initials(py))
                finals.append(to_finals_tone3(py, neutral_tone_with_five=True))
            else:
                initials.append(py)
                finals.append(py)
        return initials, finals

    def _sentence(self, sentence: str) -> tuple[list[str], list[int]]:
        sentence = _RE_LATIN.sub("", sentence)
        words = [(w, p) for w, p in psg.lcut(sentence)]
        words = self._sandhi.pre_merge_for_modify(words)
        sentence_pinyin = self._predict(sentence) if self._predict is not None else None
        phones: list[str] = []
        word2ph: list[int] = []
        offset = 0
        for word, pos in words:
            if pos == "eng":
                offset += len(word)
                continue
            initials, finals = self._word_pinyin(word, sentence_pinyin, offset)
            offset += len(word)
            finals = self._sandhi.modified_tone(word, pos, finals)
            initials, finals = _erhua(initials, finals, word, pos)
            for c, v in zip(initials, finals):
                if c == v:
                    # Punctuation passes through pypinyin unchanged; a character pypinyin
                    # cannot read also comes back unchanged and becomes UNK.
                    phones.append(c if c in _PUNCT else "UNK")
                    word2ph.append(1)
                    continue
                tone = v[-1]
                pair = syllable_to_phones(c, v[:-1]) if tone in "12345" else None
                if pair is None:
                    phones.append("UNK")
                    word2ph.append(1)
                    continue
                phones += [pair[0], pair[1] + tone]
                word2ph.append(2)
        return phones, word2ph

    def __call__(self, norm_text: str) -> tuple[list[str], list[int]]:
        phones: list[str] = []
        word2ph: list[int] = []
        for sentence in _RE_SENTENCE.split(norm_text):
            if not sentence.strip():
                continue
            p, w = self._sentence(sentence)
            phones += p
            word2ph += w
        return phones, word2ph
