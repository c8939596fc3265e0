"""Book sources → chapters of paragraphs, read where a job is planned (the gpt queue), so the API
only stores the bytes. Three formats:

- ``text``: paragraphs are separated by blank lines; a one-line paragraph that starts with
  Chapter, Part, Book, Prologue or Epilogue (any case) starts a chapter and is its title.
- ``markdown`` (CommonMark through markdown-it-py): the highest heading level in the document
  makes chapters (``#`` usually); lower headings are read as paragraphs. Emphasis, links and
  inline code keep their text; images, code blocks and raw HTML are not read.
- ``epub`` (ebooklib): one chapter per spine document with text, in spine order, titled from the
  table of contents (else its first heading). Navigation documents are skipped.

Text before the first chapter heading becomes an untitled chapter of its own.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from jobs.errors import PermanentJobError

_TEXT_CHAPTER = re.compile(r"^(chapter|part|book|prologue|epilogue)\b", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@dataclass
class Chapter:
    title: str | None
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Book:
    title: str | None
    chapters: list[Chapter]


class SourceError(PermanentJobError):
    """The source cannot be read as its format."""

    code = "invalid_source"


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _keep(chapters: list[Chapter]) -> list[Chapter]:
    """Chapters with something to say (a bare heading, a cover page, are dropped)."""
    return [c for c in chapters if c.paragraphs]


def parse_text(text: str) -> Book:
    chapters = [Chapter(None)]
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [line.strip() for line in block.strip().split("\n") if line.strip()]
        if not lines:
            continue
        if len(lines) == 1 and len(lines[0]) <= 80 and _TEXT_CHAPTER.match(lines[0]):
            chapters.append(Chapter(_clean(lines[0])))
            continue
        chapters[-1].paragraphs.append(_clean(" ".join(lines)))
    return Book(None, _keep(chapters))


def parse_markdown(text: str) -> Book:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    levels = [int(t.tag[1]) for t in tokens if t.type == "heading_open"]
    chapter_level = min(levels) if levels else 0
    chapters = [Chapter(None)]
    heading: int | None = None
    for token in tokens:
        if token.type == "heading_open":
            heading = int(token.tag[1])
        elif token.type == "heading_close":
            heading = None
        elif token.type == "inline":
            content = _clean(_inline_text(token.children or []))
            if not content:
                continue
            if heading == chapter_level:
                chapters.append(Chapter(content))
            else:
                chapters[-1].paragraphs.append(content)
    return Book(None, _keep(chapters))


def _inline_text(children: list[object]) -> str:
    parts: list[str] = []
    for child in children:
        kind = getattr(child, "type", "")
        if kind == "image":
            continue  # alt text describes a picture; it is not part of the text read aloud
        if kind in ("text", "code_inline"):
            parts.append(str(getattr(child, "content", "")))
        elif kind in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)


_BLOCKS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "blockquote", "dt", "dd", "div", "td", "th")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def parse_epub(data: bytes) -> Book:
    import ebooklib
    from ebooklib import epub

    try:
        document = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": False})
    except Exception as exc:  # ebooklib raises bare exceptions (zip, XML, missing files)
        raise SourceError(f"not a readable EPUB: {exc}") from exc
    titles = _toc_titles(document.toc)
    meta = document.get_metadata("DC", "title")
    book_title = _clean(str(meta[0][0])) if meta else None
    chapters: list[Chapter] = []
    for idref, _linear in document.spine:
        item = document.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or isinstance(item, epub.EpubNav):
            continue
        blocks = _xhtml_blocks(item.get_content())
        if not blocks:
            continue
        title = titles.get(item.get_name())
        if title is None and blocks[0][0] in _HEADINGS:
            title = blocks[0][1]
        paragraphs = [text for _, text in blocks]
        if title is not None and blocks[0][0] in _HEADINGS and blocks[0][1] == title:
            paragraphs = paragraphs[1:]
        chapters.append(Chapter(title, paragraphs))
    return Book(book_title, _keep(chapters))


def _toc_titles(toc: object) -> dict[str, str]:
    """href (without fragment) → title, first entry wins (a chapter's own entry precedes its
    sections)."""
    out: dict[str, str] = {}
    stack = list(toc) if isinstance(toc, (list, tuple)) else [toc]
    while stack:
        entry = stack.pop(0)
        if isinstance(entry, (list, tuple)):
            section, children = (entry[0], entry[1]) if len(entry) == 2 else (None, entry)
            if section is not None:
                stack.insert(0, section)
            stack[1:1] = list(children) if isinstance(children, (list, tuple)) else []
            continue
        href = getattr(entry, "href", None)
        title = getattr(entry, "title", None)
        if href and title:
            out.setdefault(str(href).split("#", 1)[0], _clean(str(title)))
    return out


def _xhtml_blocks(content: bytes) -> list[tuple[str, str]]:
    """(tag, text) of the innermost block elements of a chapter document, in order."""
    import lxml.html

    try:
        root = lxml.html.document_fromstring(content)
    except Exception:
        return []
    for bad in root.xpath("//script|//style|//pre|//code[not(ancestor::p)]|//nav|//head"):
        bad.drop_tree()
    out: list[tuple[str, str]] = []
    for element in root.iter(*_BLOCKS):
        if any(child.tag in _BLOCKS for child in element.iterdescendants()):
            continue  # only leaves: a div of paragraphs is read as its paragraphs
        text = _clean(element.text_content())
        if text:
            out.append((str(element.tag), text))
    return out


def parse_source(data: bytes, source_format: str) -> Book:
    if source_format == "epub":
        return parse_epub(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"the {source_format} source is not UTF-8: {exc}") from exc
    if source_format == "markdown":
        return parse_markdown(text)
    if source_format == "text":
        return parse_text(text)
    raise SourceError(f"unknown source format {source_format!r}")
