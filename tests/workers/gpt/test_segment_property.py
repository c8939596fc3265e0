"""Segmentation never alters the text: for generated text (words, decimals, abbreviations,
initials, quotes, CJK punctuation, URLs, odd whitespace), every split method and en/zh/ja,
each segment is a non-empty exact slice ``source[start:end]``, the segments come in order
without overlap, they join to the source up to whitespace, they respect the length cap, and
their spoken forms join to the spoken form of the whole text (no reading is ever cut)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.gpt.planning import plan_pieces
from workers.gpt.text.reading import read_aloud, readings
from workers.gpt.text.segment import SplitMethod, kept_together

WORDS = ["the", "Price", "rose", "Tolkien", "wrote", "it", "She", "left", "A", "I", "ok",
         "它", "涨了", "价格", "我们", "行く", "彼は", "言った", "です", "ねえ"]
ABBREVIATIONS = ["Dr.", "Mr.", "Mrs.", "St.", "e.g.", "i.e.", "a.m.", "p.m.", "Jan.", "etc.", "U.S.", "vs.",
                 "No.", "approx."]
INITIALS = ["J.", "R.", "A."]
QUOTES = ['"', "'", "“", "”", "‘", "’", "「", "」", "『", "』", "(", ")", "（", "）", "《", "》"]
MARKS = [".", ",", "!", "?", ";", ":", "...", "。", "！", "？", "，", "、", "…", "——", "~", "-->", "<", "&"]
SPACES = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\u3000"]
SPECIAL = ["https://ex.am/ple", "a.b@example.com", "$12.40", "3.5%", "10:30", "2.1.3", "1,000", "€3.50", "5 kg"]

numbers = st.builds(
    lambda a, b, sep: f"{a}{sep}{b}" if sep else str(a),
    st.integers(0, 9999), st.integers(0, 99), st.sampled_from(["", ".", ",", ":"]),
)
token = st.one_of(
    st.sampled_from(WORDS), st.sampled_from(ABBREVIATIONS), st.sampled_from(INITIALS),
    st.sampled_from(QUOTES), st.sampled_from(MARKS), st.sampled_from(SPACES),
    st.sampled_from(SPECIAL), numbers,
)
texts = st.lists(token, min_size=1, max_size=40).map("".join)


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(text=texts, max_chars=st.sampled_from([12, 40, 300]))
def test_segments_are_exact_slices_that_join_to_the_source(text: str, max_chars: int) -> None:
    for language in ("en", "zh", "ja"):
        whole_spoken = _squeeze(read_aloud(text, language))
        # Only a stretch read as one unit that is itself longer than the cap may exceed it.
        long_units = [s for s in [*kept_together(text), *(r.span for r in readings(text, language))]
                      if s.end - s.start > max_chars]
        for method in SplitMethod:
            pieces = plan_pieces(text, method.value, language, max_chars)
            if not re.search(r"\w", text):
                assert pieces == []
                continue
            where = (method.value, language, text)
            end = 0
            for piece in pieces:
                assert piece.span.start >= end, where  # in order, no overlap
                assert piece.written == text[piece.span.start : piece.span.end], where
                assert piece.written.strip() == piece.written and piece.written, where
                assert len(piece.written) <= max_chars or any(
                    piece.span.start <= u.start and u.end <= piece.span.end for u in long_units
                ), where
                end = piece.span.end
            assert _squeeze("".join(p.written for p in pieces)) == _squeeze(text), where
            assert _squeeze("".join(p.spoken for p in pieces)) == whole_spoken, where
