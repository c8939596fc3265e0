"""Cutting long input into synthesis segments: every segment is an exact slice of the source.

A segment is a :class:`Span` ``(start, end)`` with ``text == source[start:end]``; the spans of a
text, joined, give the source back up to whitespace, and no span is empty. Nothing here
rewrites the text: what the engine says about a slice is the reading layer's business
(:mod:`workers.gpt.text.reading`), which is computed on the whole, unaltered sentence.

Sentence boundaries come from sentencex (Wikimedia's rule-based segmenter: offline, text
preserving, abbreviations, decimals, initials, closing quotes, 。！？). Three corrections on top:
a CJK closing quote or bracket that sentencex starts a sentence with goes back to the sentence
it closes; a sentence ending in an abbreviation it does not know ("approx.") continues when the
next one starts in lower case or with a digit; a Japanese quote ending in 」 stays with the
quotative particle after it (「行くよ。」と言った).

Cut points inside a *kept-together* span never count: numbers with separators (3.5, 1,000,
10:30, 2.1.3), URLs, e-mail addresses, dotted abbreviations (a.m., U.S., e.g.), known
abbreviations (Dr., Jan.), initials, plus whatever the caller passes (the reading layer's
replacements), so a segment never ends inside something that is read as one unit.

The official methods, by name (official names in brackets): ``none`` (cut0),
``every_4_sentences`` (cut1), ``about_50_chars`` (cut2, clauses packed past 50 characters),
``chinese_period`` (cut3, sentences ending in 。), ``english_period`` (cut4, sentences ending in
"."), ``punctuation`` (cut5, after every clause mark), and ``sentences`` (ours: every sentence,
packed later up to the length cap). As in the official pipeline, a newline always ends a
segment, pieces shorter than 5 characters join the next, and pieces over 510 characters (the
BERT limit) are cut at their last clause mark or space. Unlike the official pipeline, marks are
never added, removed or collapsed: the engine closes the spoken form with a mark instead
(``workers.gpt.engine.with_final_mark``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

import sentencex


class SplitMethod(str, Enum):
    """How a long text is cut into segments that are synthesised one at a time."""

    NONE = "none"
    """Do not cut (official cut0); newlines still end a segment."""
    EVERY_4_SENTENCES = "every_4_sentences"
    """Group sentences four at a time; the last group takes the remainder (cut1)."""
    ABOUT_50_CHARS = "about_50_chars"
    """Close a segment once its clauses pass 50 characters; a short tail joins the previous (cut2)."""
    CHINESE_PERIOD = "chinese_period"
    """Cut after every sentence that ends in 。 (cut3)."""
    ENGLISH_PERIOD = "english_period"
    """Cut after every sentence that ends in "." (cut4); decimals and abbreviations never end one."""
    PUNCTUATION = "punctuation"
    """Cut after every clause mark outside numbers, abbreviations, URLs and e-mails (cut5)."""
    SENTENCES = "sentences"
    """Cut after every sentence (not official; the planner packs them up to its length cap)."""

    @classmethod
    def parse(cls, value: SplitMethod | str) -> SplitMethod:
        """Accept our names and the official ``cut0``..``cut5``."""
        if isinstance(value, SplitMethod):
            return value
        official = {f"cut{i}": m for i, m in enumerate(list(cls)[:6])}
        return official.get(value) or cls(value)


@dataclass(frozen=True, order=True)
class Span:
    """``source[start:end]``: one segment, or a stretch that must stay in one segment."""

    start: int
    end: int

    def text(self, source: str) -> str:
        return source[self.start : self.end]


# The official sentence marks (``split``), for the engine's closing mark and cut2's clauses.
SENTENCE_MARKS = frozenset("，。？！,.?!~:：—…")
_CUT5_MARKS = frozenset(",.;?!、，。？！;：…")
# Closing quotes and brackets stay with the mark before them ("Stop." / 「行くよ。」).
_CJK_CLOSERS = frozenset("”’」』）】》〉］｝〕〗〙〛")
_CLOSERS = _CJK_CLOSERS | frozenset(")]}")
_STRAIGHT_QUOTES = frozenset("\"'")
MAX_SEGMENT_CHARS = 510
MIN_SEGMENT_CHARS = 5
_JA_QUOTATIVE = frozenset("とっのがをにはもや")

# Abbreviations whose period does not end a sentence (lower-cased, without the period).
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc no nos fig figs approx est dept inc ltd co corp vol "
    "p pp ch sec gen col lt sgt capt rev hon mt ave blvd rd jan feb mar apr jun jul aug sep "
    "sept oct nov dec tue wed thu fri cf al".split()
)
# Of those, the ones that never end a sentence: the next sentence sentencex sees is the same one.
_NEVER_FINAL = frozenset("mr mrs ms dr prof gen lt sgt capt rev hon mt vs approx cf fig figs p pp vol ch".split())
_ABBREV_ALT = "|".join(sorted(ABBREVIATIONS, key=len, reverse=True))
_RE_KEEP = re.compile(
    r"(?P<url>(?:https?://|www\.)[^\s<>\"'“”‘’「」『』（）()\[\]{}]+)"
    r"|(?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
    r"|(?P<number>\d+(?:[.,:：]\d+)+)"
    r"|(?P<dotted>\b(?:[A-Za-z]\.){2,})"
    rf"|(?P<abbrev>\b(?i:{_ABBREV_ALT})\.)"
    r"|(?P<initial>\b[A-Z]\.(?=\s*[A-Z]))"
)
_TRAILING_URL_PUNCT = ".,;:!?。，！？、)"
_RE_NEWLINE = re.compile(r"\n")
_RE_WORD = re.compile(r"\w")


def kept_together(text: str) -> list[Span]:
    """Stretches of ``text`` that are read as one unit and never cut (see module docstring)."""
    spans = []
    for m in _RE_KEEP.finditer(text):
        start, end = m.span()
        if m.lastgroup in ("url", "email"):
            while end > start and text[end - 1] in _TRAILING_URL_PUNCT:
                end -= 1
        spans.append(Span(start, end))
    return spans


class _Guard:
    """Answers "is this position inside a kept-together span?" in constant time."""

    def __init__(self, spans: Iterable[Span]) -> None:
        self.spans = sorted(spans)
        size = max((s.end for s in self.spans), default=0) + 1
        self._covered = bytearray(size)  # [i]: character i belongs to a span
        self._interior = bytearray(size)  # [p]: a cut before character p splits a span
        for s in self.spans:
            self._covered[s.start : s.end] = b"\x01" * (s.end - s.start)
            self._interior[s.start + 1 : s.end] = b"\x01" * max(0, s.end - s.start - 1)

    def cuts_into(self, pos: int) -> bool:
        """True when cutting before ``source[pos]`` would split a span."""
        return 0 <= pos < len(self._interior) and bool(self._interior[pos])

    def covers(self, index: int) -> bool:
        """True when the character at ``index`` belongs to a span."""
        return 0 <= index < len(self._covered) and bool(self._covered[index])


def _segmenter_language(text: str, language: str) -> str:
    if language in ("zh", "ja", "en"):
        return language
    if re.search("[\u3040-\u30ff]", text):
        return "ja"
    return "zh" if re.search("[\u4e00-\u9fff]", text) else "en"


def _after_closers(text: str, pos: int) -> int:
    """Extend a cut position over closing quotes/brackets (and marks) that belong before it."""
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch in _CLOSERS or ch in _CUT5_MARKS or ch in SENTENCE_MARKS:
            pos += 1
        elif ch in _STRAIGHT_QUOTES and (pos + 1 == n or text[pos + 1].isspace() or text[pos + 1] in _CLOSERS):
            pos += 1
        else:
            break
    return pos


def _trim(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end) if end > start else None


@lru_cache(maxsize=4096)
def _raw_sentence_ends(text: str, language: str) -> tuple[int, ...]:
    ends: list[int] = []
    pos = 0
    for sentence in sentencex.segment(language, text):
        if not text.startswith(sentence, pos):
            # sentencex returns the text unchanged; if that ever fails, keep what lines up.
            found = text.find(sentence.strip(), pos)
            if found < 0:
                break
            pos = found + len(sentence.strip())
        else:
            pos += len(sentence)
        ends.append(pos)
    return tuple(ends)


def sentence_spans(text: str, language: str = "en", keep: Sequence[Span] = ()) -> list[Span]:
    """Sentences of ``text`` as trimmed spans (see module docstring for the corrections)."""
    guard = _Guard([*kept_together(text), *keep])
    spans: list[Span] = []
    start = 0
    for end in _raw_sentence_ends(text, _segmenter_language(text, language)):
        span = _trim(text, start, end)
        start = end
        if span is None:
            continue
        if spans and _continues(text, spans[-1], span, guard):
            spans[-1] = Span(spans[-1].start, span.end)
            continue
        spans.append(span)
    return [piece for span in _fold_closers(text, spans) for piece in _split_after_brackets(text, span)]


# "(This is a note.) Next one." / "（注：这是例子。）下一句。": sentencex keeps a bracketed
# sentence with the one after it.
_RE_BRACKET_END = re.compile(r"[.!?。！？][)）\]】]+(?=\s*[A-Z\u4e00-\u9fff\u30a0-\u30ff「“])")


def _split_after_brackets(text: str, span: Span) -> list[Span]:
    cuts = [m.end() for m in _RE_BRACKET_END.finditer(text, span.start, span.end) if m.end() < span.end]
    return _pieces_between(text, span, cuts)


def _pieces_between(text: str, span: Span, cuts: list[int]) -> list[Span]:
    bounds = [span.start, *cuts, span.end]
    return [s for a, b in zip(bounds[:-1], bounds[1:]) if (s := _trim(text, a, b)) is not None]


def _continues(text: str, previous: Span, current: Span, guard: _Guard) -> bool:
    if guard.cuts_into(previous.end) or guard.cuts_into(current.start):
        return True
    head = text[current.start]
    if head in _CJK_CLOSERS or head in ")]}":
        return False  # moved back by _fold_closers, which keeps the rest a sentence
    before = text[previous.start : previous.end]
    word = re.search(r"(\w+)\.$", before)
    if word and word.group(1).lower() in _NEVER_FINAL:
        return True
    if word and word.group(1).lower() in ABBREVIATIONS and (head.islower() or head.isdigit()):
        return True
    return before[-1:] in ("」", "』") and head in _JA_QUOTATIVE


def _fold_closers(text: str, spans: list[Span]) -> list[Span]:
    """A sentence that starts with closing quotes/brackets gives them to the one before."""
    out: list[Span] = []
    for span in spans:
        start = span.start
        if out:
            while start < span.end and (text[start] in _CJK_CLOSERS or text[start] in ")]}"):
                start += 1
            if start > span.start:
                out[-1] = Span(out[-1].start, start)
                trimmed = _trim(text, start, span.end)
                if trimmed is None:
                    continue
                span = trimmed
        out.append(span)
    return out


def _clause_cuts(text: str, marks: frozenset[str], guard: _Guard, sentence_ends: set[int]) -> set[int]:
    cuts: set[int] = set()
    for i, ch in enumerate(text):
        if ch not in marks:
            continue
        pos = _after_closers(text, i + 1)
        if pos in sentence_ends or (not guard.covers(i) and not guard.cuts_into(pos)):
            cuts.add(pos)
    return cuts


def _pieces(text: str, cuts: Iterable[int]) -> list[Span]:
    bounds = sorted({0, len(text), *cuts})
    return [s for a, b in zip(bounds[:-1], bounds[1:]) if (s := _trim(text, a, b)) is not None]


def _fold_unspoken(text: str, spans: list[Span]) -> list[Span]:
    """A piece without a letter or digit (a stray mark) joins its neighbour."""
    out: list[Span] = []
    pending: Span | None = None
    for span in spans:
        if not _RE_WORD.search(span.text(text)):
            if out:
                out[-1] = Span(out[-1].start, span.end)
            else:
                pending = Span(pending.start if pending else span.start, span.end)
            continue
        if pending is not None:
            span = Span(pending.start, span.end)
            pending = None
        out.append(span)
    if pending is not None:
        out.append(pending)
    return out


def _newline_cuts(text: str) -> set[int]:
    return {m.start() for m in _RE_NEWLINE.finditer(text)}


def cut_spans(text: str, method: SplitMethod | str, language: str = "zh", keep: Sequence[Span] = ()) -> list[Span]:
    """Apply one split method: the segments as spans, before the short/long corrections."""
    method = SplitMethod.parse(method)
    if not text.strip():
        return []
    guard = _Guard([*kept_together(text), *keep])
    sentences = sentence_spans(text, language, keep)
    ends = {s.end for s in sentences}
    cuts: set[int] = _newline_cuts(text)
    if method is SplitMethod.EVERY_4_SENTENCES:
        starts = list(range(0, len(sentences), 4))
        # The official bounds list drops its last start, so the final group holds 4..7.
        cuts |= {sentences[i - 1].end for i in starts[1:-1]}
    elif method is SplitMethod.ABOUT_50_CHARS:
        clauses = _pieces(text, _clause_cuts(text, SENTENCE_MARKS, guard, ends) | ends)
        closes: list[int] = []
        size = 0
        for clause in clauses:
            size += clause.end - clause.start
            if size > 50:
                closes.append(clause.end)
                size = 0
        end = len(text.rstrip())
        if closes and closes[-1] >= end:
            closes.pop()  # the last group closed at the end of the text: no tail
        elif closes and len(text[closes[-1] : end].strip()) < 50:
            closes.pop()  # a short tail joins the group before it
        groups = closes
        cuts |= set(groups)
    elif method is SplitMethod.CHINESE_PERIOD:
        cuts |= {s.end for s in sentences if text[s.start : s.end].rstrip("".join(_CLOSERS) + "\"'").endswith("。")}
    elif method is SplitMethod.ENGLISH_PERIOD:
        cuts |= {s.end for s in sentences if text[s.start : s.end].rstrip("".join(_CLOSERS) + "\"'").endswith(".")}
    elif method is SplitMethod.PUNCTUATION:
        cuts |= _clause_cuts(text, _CUT5_MARKS, guard, ends) | ends
    elif method is SplitMethod.SENTENCES:
        cuts |= ends
    return _fold_unspoken(text, _pieces(text, cuts))


def _merge_short(text: str, spans: list[Span], threshold: int = MIN_SEGMENT_CHARS) -> list[Span]:
    """Official ``merge_short_text_in_array``: a piece under ``threshold`` joins the next."""
    if len(spans) < 2:
        return spans
    out: list[Span] = []
    current: Span | None = None
    for span in spans:
        current = span if current is None else Span(current.start, span.end)
        if len(current.text(text)) >= threshold:
            out.append(current)
            current = None
    if current is not None:
        if out:
            out[-1] = Span(out[-1].start, current.end)
        else:
            out.append(current)
    return out


def cap_span(text: str, span: Span, max_chars: int, keep: Sequence[Span] = ()) -> list[Span]:
    """Cut a span longer than ``max_chars`` at its last clause mark, else its last space,
    between half the cap and the cap, never inside a kept-together stretch. A stretch longer
    than the cap (a long URL) becomes a segment of its own, over the cap; only one longer than
    the 510-character BERT limit is cut hard."""
    if span.end - span.start <= max_chars:
        return [span]
    guard = _Guard([s for s in [*kept_together(text), *keep] if s.end > span.start and s.start < span.end])
    out: list[Span] = []
    current: Span | None = span
    while current is not None and current.end - current.start > max_chars:
        lo, hi = current.start + max_chars // 2, current.start + max_chars
        marks = [
            p for i in range(lo - 1, hi) if text[i] in SENTENCE_MARKS or text[i] in _CUT5_MARKS
            if (p := _after_closers(text, i + 1)) <= hi and not guard.covers(i) and not guard.cuts_into(p)
        ]
        spaces = [i for i in range(lo, hi + 1) if text[i].isspace() and not guard.cuts_into(i)]
        cut = marks[-1] if marks else spaces[-1] if spaces else hi
        inside = [s for s in guard.spans if s.start < cut < s.end]
        if inside and inside[0].start > current.start:
            cut = inside[0].start
        elif inside and inside[0].end - current.start <= MAX_SEGMENT_CHARS:
            cut = inside[0].end  # a stretch longer than the cap is a segment of its own
        head, current = _trim(text, current.start, cut), _trim(text, cut, current.end)
        if head is not None:
            out.append(head)
    if current is not None:
        out.append(current)
    return out


def segment_spans(
    text: str,
    method: SplitMethod | str = SplitMethod.NONE,
    language: str = "zh",
    max_chars: int = MAX_SEGMENT_CHARS,
    keep: Sequence[Span] = (),
) -> list[Span]:
    """The segmentation pipeline: :func:`cut_spans`, short pieces merged forward, each piece
    capped at ``max_chars`` (never above the 510-character BERT limit). ``sentences`` packs
    whole sentences up to the cap instead of merging short ones."""
    method = SplitMethod.parse(method)
    limit = min(max_chars, MAX_SEGMENT_CHARS)
    pieces = cut_spans(text, method, language, keep)
    if method is SplitMethod.SENTENCES:
        capped = [p for s in pieces for p in cap_span(text, s, limit, keep)]
        return _pack(text, capped, limit)
    merged = _merge_short(text, pieces)
    return [p for s in merged for p in cap_span(text, s, limit, keep)]


def _pack(text: str, spans: list[Span], max_chars: int) -> list[Span]:
    """Consecutive sentences share a segment while it stays under the cap and no newline
    separates them."""
    out: list[Span] = []
    for span in spans:
        if out and span.end - out[-1].start <= max_chars and "\n" not in text[out[-1].end : span.start]:
            out[-1] = Span(out[-1].start, span.end)
        else:
            out.append(span)
    return out


def cut_text(text: str, method: SplitMethod | str, language: str = "zh") -> list[str]:
    """:func:`cut_spans` as the texts of the slices."""
    return [s.text(text) for s in cut_spans(text, method, language)]


def split_text(text: str, method: SplitMethod | str = SplitMethod.NONE, language: str = "zh") -> list[str]:
    """:func:`segment_spans` as the texts of the slices."""
    return [s.text(text) for s in segment_spans(text, method, language)]
