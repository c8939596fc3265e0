"""Book sources → chapters → planned segments: Markdown headings, plain-text chapter lines and
EPUB spines; pause markers; the lexicon; content keys that change only where the text does."""

from __future__ import annotations

import uuid

import pytest

from jobs.books import BookOptions, detect_format
from jobs.settings import Settings
from jobs.submission import RequestRejected
from tests.support.books import CHAPTER_TITLES, PARAGRAPHS, epub_book, markdown_book
from workers.gpt.book_planning import Lexicon, plan_book, split_pauses
from workers.gpt.sources import SourceError, parse_epub, parse_markdown, parse_source, parse_text

SETTINGS = Settings(home="/tmp/voxmill-unused")
VOICE = uuid.UUID(int=7)


def options(**raw: object) -> BookOptions:
    return BookOptions.from_dict(dict(raw), SETTINGS)


def test_markdown_headings_make_chapters_and_markup_is_not_read() -> None:
    book = parse_markdown(
        "Before any heading.\n\n# One\n\nSome *emphasis*, a [link](http://x.test) and `code`.\n"
        "A soft break.\n\n![a picture](p.png)\n\n## A section\n\n- first item\n- second item\n\n"
        "```\nnot read()\n```\n\n<div>raw html</div>\n\n# Two\n\nLast words.\n"
    )
    assert [c.title for c in book.chapters] == [None, "One", "Two"]
    assert book.chapters[0].paragraphs == ["Before any heading."]
    assert book.chapters[1].paragraphs == [
        "Some emphasis, a link and code. A soft break.",
        "A section",
        "first item",
        "second item",
    ]
    assert book.chapters[2].paragraphs == ["Last words."]


def test_markdown_chapters_are_the_highest_heading_level_present() -> None:
    book = parse_markdown("## A\n\nx.\n\n### a.1\n\ny.\n\n## B\n\nz.\n")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [("A", ["x.", "a.1", "y."]), ("B", ["z."])]


def test_plain_text_chapter_lines_and_paragraphs() -> None:
    book = parse_text("A foreword.\n\nCHAPTER I.\n\nLine one\nline two.\n\nSecond.\n\nChapter 2: Home\n\nEnd.\n")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        (None, ["A foreword."]),
        ("CHAPTER I.", ["Line one line two.", "Second."]),
        ("Chapter 2: Home", ["End."]),
    ]


def test_epub_chapters_follow_the_spine_titled_from_the_toc() -> None:
    book = parse_epub(epub_book("A Small Book"))
    assert book.title == "A Small Book"
    assert [c.title for c in book.chapters] == CHAPTER_TITLES
    assert [c.paragraphs for c in book.chapters] == PARAGRAPHS
    with pytest.raises(SourceError):
        parse_epub(b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError):
        parse_source(b"\xff\xfe\x00bad", "markdown")


def test_detect_format() -> None:
    assert detect_format(epub_book()) == "epub"
    assert detect_format(b"# Title\n\ntext", None) == "markdown"
    assert detect_format(b"just text", "notes.txt") == "text"
    assert detect_format(b"just text", "book.md") == "markdown"
    assert detect_format(b"plain words", None) == "text"
    with pytest.raises(RequestRejected) as refused:
        detect_format(b"PK\x03\x04garbage", "x.zip")
    assert refused.value.code == "unsupported_source_format"


def test_pause_markers() -> None:
    assert split_pauses("Hello. [pause 1.5s] World.", 0.8) == [("Hello.", 1.5), ("World.", None)]
    assert split_pauses("A [PAUSE 250ms] b [pause] c", 0.8) == [("A", 0.25), ("b", 0.8), ("c", None)]
    assert split_pauses("A [pause 1s][pause 2s] b", 0.8) == [("A", 3.0), ("b", None)]
    assert split_pauses("A [pause 99s]", 0.8) == [("A", 30.0)]
    assert split_pauses("no markers", 0.8) == [("no markers", None)]


def test_lexicon_replaces_whole_words_only() -> None:
    lexicon = Lexicon({"SQL": "sequel", "SQLite": "es queue lite", "Dr.": "Doctor"})
    assert lexicon.apply("SQL and SQLite, not MySQL. Dr. Who") == "sequel and es queue lite, not MySQL. Doctor Who"


def test_book_options_are_validated() -> None:
    assert options().as_dict()["pauses"] == {"sentence": 0.3, "paragraph": 0.8, "chapter": 2.0}
    for bad in ({"pauses": {"sentence": -1}}, {"pauses": {"breath": 1}}, {"lexicon": {"": "x"}}, {"colour": 1}):
        with pytest.raises(RequestRejected) as refused:
            options(**bad)
        assert refused.value.code == "invalid_book_options"


def test_plan_book_pauses_captions_and_keys() -> None:
    book = parse_markdown(markdown_book())
    opts = options(pauses={"sentence": 0.2, "paragraph": 0.7}, lexicon={"porter": "PORTER"})
    plan = plan_book(book, opts, "sentences", "en", VOICE, "m1", {}, 300)
    assert plan.chapter_titles == CHAPTER_TITLES
    first = [p for p in plan.segments if p.chapter == 0]
    assert [p.caption for p in first] == [
        "The Station",
        "The train was late again. Nobody on the platform seemed surprised.",
        "A porter pushed a cart of parcels past the benches.",
        "Then the bell rang.",
    ]
    assert [p.pause_after_s for p in first] == [0.7, 0.7, 1.2, 0.0]  # title, paragraph, marker, chapter end
    assert first[2].text == "A PORTER pushed a cart of parcels past the benches."  # spoken form
    assert {p.chapter for p in plan.segments} == {0, 1, 2}
    # A cap shorter than the paragraphs cuts at sentences: sentence pauses inside a paragraph.
    capped = plan_book(book, opts, "sentences", "en", VOICE, "m1", {}, 45)
    ferry = [p for p in capped.segments if p.chapter == 1][1:3]
    assert [p.caption for p in ferry] == ["The ferry left at noon.", "Gulls followed it out past the breakwater."]
    assert [p.pause_after_s for p in ferry] == [0.2, 0.7]
    assert all(len(p.caption or "") <= 45 for p in capped.segments)


def test_editing_a_paragraph_changes_only_its_keys() -> None:
    edited = [list(ch) for ch in PARAGRAPHS]
    edited[1][1] = "Halfway across, the wind turned warm and everyone stayed on deck."
    before = plan_book(parse_markdown(markdown_book()), options(), "sentences", "en", VOICE, "m1", {}, 300)
    after = plan_book(parse_markdown(markdown_book(edited)), options(), "sentences", "en", VOICE, "m1", {}, 300)
    changed = [a.caption for a, b in zip(after.segments, before.segments, strict=True) if a.content_key != b.content_key]
    assert changed == [edited[1][1]]
    # Another voice, model version or params changes every key.
    other = plan_book(parse_markdown(markdown_book()), options(), "sentences", "en", uuid.UUID(int=8), "m1", {}, 300)
    assert not {p.content_key for p in other.segments} & {p.content_key for p in before.segments}
