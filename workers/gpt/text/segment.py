"""Cutting long input into synthesis segments (the official cut0..cut5 methods).

Names say what each method does; the official names are in brackets:
``none`` (cut0), ``every_4_sentences`` (cut1), ``about_50_chars`` (cut2),
``chinese_period`` (cut3, at 。), ``english_period`` (cut4, at "." but not inside numbers
such as 3.14), ``punctuation`` (cut5, at any of , . ; ? ! 、 ， 。 ？ ！ ： …, again keeping
decimal points). :func:`cut_text` is the bare method; :func:`split_text` adds what the
official TTS pipeline does around it (``TextPreprocessor.pre_seg_text``): a leading mark
when the first clause is very short, merging pieces shorter than 5 characters, a closing
mark on every piece, and splitting pieces over 510 characters (the BERT limit).
"""

from __future__ import annotations

import re
from enum import Enum


class SplitMethod(str, Enum):
    """How a long text is cut into segments that are synthesised one at a time."""

    NONE = "none"
    """Do not cut (official cut0)."""
    EVERY_4_SENTENCES = "every_4_sentences"
    """Group sentences four at a time; the last group takes the remainder (cut1)."""
    ABOUT_50_CHARS = "about_50_chars"
    """Close a segment once it passes 50 characters; a short tail joins the previous (cut2)."""
    CHINESE_PERIOD = "chinese_period"
    """Cut at every 。 (cut3)."""
    ENGLISH_PERIOD = "english_period"
    """Cut at every "." that is not a decimal point (cut4)."""
    PUNCTUATION = "punctuation"
    """Cut after every punctuation mark, keeping decimal points (cut5)."""

    @classmethod
    def parse(cls, value: SplitMethod | str) -> SplitMethod:
        """Accept our names and the official ``cut0``..``cut5``."""
        if isinstance(value, SplitMethod):
            return value
        official = {f"cut{i}": m for i, m in enumerate(cls)}
        return official.get(value) or cls(value)


SENTENCE_MARKS = frozenset("，。？！,.?!~:：—…")
_PUNCT_ONLY = frozenset("!?…,.- ")
_CUT5_MARKS = frozenset(",.;?!、，。？！;：…")
MAX_SEGMENT_CHARS = 510


def _sentences(text: str) -> list[str]:
    """Official ``split``: cut after each sentence mark, closing the text with 。 if needed."""
    text = text.replace("……", "。").replace("——", "，")
    if text[-1] not in SENTENCE_MARKS:
        text += "。"
    out: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch in SENTENCE_MARKS:
            out.append(text[start: i + 1])
            start = i + 1
    return out


def _keep(items: list[str], marks: frozenset[str] = _PUNCT_ONLY) -> list[str]:
    return [s for s in items if not set(s) <= marks]


def cut_text(text: str, method: SplitMethod | str) -> list[str]:
    """Apply one split method; returns the pieces (may be empty for punctuation-only text)."""
    method = SplitMethod.parse(method)
    text = text.strip("\n")
    if not text:
        return []
    if method is SplitMethod.NONE:
        return [text] if not set(text) <= _PUNCT_ONLY else []
    if method is SplitMethod.EVERY_4_SENTENCES:
        sentences = _sentences(text)
        starts = list(range(0, len(sentences), 4))
        if len(starts) < 2:
            return _keep([text])
        # The official bounds list drops its last start, so the final group holds 4..7.
        bounds = starts[:-1] + [len(sentences)]
        return _keep(["".join(sentences[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    if method is SplitMethod.ABOUT_50_CHARS:
        sentences = _sentences(text)
        if len(sentences) < 2:
            return [text]
        out: list[str] = []
        current, size = "", 0
        for s in sentences:
            current += s
            size += len(s)
            if size > 50:
                out.append(current)
                current, size = "", 0
        if current:
            out.append(current)
        if len(out) > 1 and len(out[-1]) < 50:
            tail = out.pop()
            out[-1] += tail
        return _keep(out)
    if method is SplitMethod.CHINESE_PERIOD:
        return _keep(text.strip("。").split("。"))
    if method is SplitMethod.ENGLISH_PERIOD:
        return _keep(re.split(r"(?<!\d)\.(?!\d)", text.strip(".")))
    # PUNCTUATION
    pieces: list[str] = []
    current_chars: list[str] = []
    for i, ch in enumerate(text):
        current_chars.append(ch)
        decimal_point = ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
        if ch in _CUT5_MARKS and not decimal_point:
            pieces.append("".join(current_chars))
            current_chars = []
    if current_chars:
        pieces.append("".join(current_chars))
    return _keep(pieces, _CUT5_MARKS)


def _split_long(text: str, max_len: int = MAX_SEGMENT_CHARS) -> list[str]:
    """Official ``split_big_text``: pack clauses into pieces of at most ``max_len``."""
    parts = re.split("([" + re.escape("".join(sorted(SENTENCE_MARKS))) + "])", text)
    out: list[str] = []
    current = ""
    for part in parts:
        if len(current + part) > max_len:
            out.append(current)
            current = part
        else:
            current += part
    if current:
        out.append(current)
    return out


def _merge_short(pieces: list[str], threshold: int = 5) -> list[str]:
    if len(pieces) < 2:
        return pieces
    out: list[str] = []
    current = ""
    for p in pieces:
        current += p
        if len(current) >= threshold:
            out.append(current)
            current = ""
    if current:
        if out:
            out[-1] += current
        else:
            out.append(current)
    return out


_RE_REPEATED_PUNCT = re.compile(r"([!?…,.\-])([!?…,.\-])+")


def split_text(text: str, method: SplitMethod | str = SplitMethod.NONE, language: str = "zh") -> list[str]:
    """The official segmentation pipeline around :func:`cut_text` (see module docstring)."""
    text = _RE_REPEATED_PUNCT.sub(r"\1", text).strip("\n")
    if not text:
        return []
    closing = "." if language == "en" else "。"
    first_clause = re.split("[" + re.escape("".join(sorted(SENTENCE_MARKS))) + "]", text)[0].strip()
    if text[0] not in SENTENCE_MARKS and len(first_clause) < 4:
        # A very short opening gets a mark in front so the model does not swallow it.
        text = closing + text
    pieces = [p for p in cut_text(text, method) if p not in ("", " ")]
    pieces = [p for chunk in pieces for p in chunk.split("\n")]
    pieces = _merge_short([p for p in pieces if p not in ("", " ")])
    out: list[str] = []
    for p in pieces:
        if not p.strip() or not re.sub(r"\W+", "", p):
            continue  # punctuation only
        if p[-1] not in SENTENCE_MARKS:
            p += closing
        out.extend(_split_long(p) if len(p) > MAX_SEGMENT_CHARS else [p])
    return out
