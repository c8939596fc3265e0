"""English text normalisation: numbers, ordinals, times, money, units, fractions, casing.

Follows the official ``english.text_normalize`` + ``en_normalization/expend.normalize`` rule
order and readings (number words from ``inflect``, years 1001-2999 read in pairs, 24-hour
times read with a.m./p.m., "$6.24" -> six dollars and twenty-four cents), except that "3. " is
read as a list ordinal only at the start of a line. The output keeps
only letters, spaces and ``' . , ? ! -``; upper-case letters inside a word are split off
("GPT" -> "G P T") so acronyms are spelled out.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from workers.gpt.text.symbols import PUNCTUATION

_UNITS = {
    "m": ("meter", "meters"), "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"), "ft": ("feet", "feet"),
    "L": ("liter", "liters"), "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"), "h": ("hour", "hours"), "min": ("minute", "minutes"),
    "s": ("second", "seconds"), "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}
_OPERATORS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}
_SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERAND = rf"((-?)((\d+)(\.\d+)?[{_SUP}]*)|(\.\d+[{_SUP}]*)|([A-Za-z][{_SUP}]*))"

# Official: r"\b([0-9]+)\. " anywhere, which reads a sentence-final number as an ordinal
# ("I have 3. You" -> "I have third, You", "3.14159. That" -> "... ninth,"). A numbered list
# item starts a line, so only there.
_RE_LIST_ORDINAL = re.compile(r"(?m)^([0-9]+)\. ")
_RE_ARITHMETIC = re.compile(_OPERAND + r"\s+([\+\-\×÷=])\s+" + _OPERAND)
_RE_NEGATIVE = re.compile(r"(?:^|\s+)(-)(\d+)")
_RE_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
_RE_TIME = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
_RE_MEASURE = re.compile(r"\b([0-9]+(\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))\b")
_RE_POUNDS_BEFORE = re.compile(r"£([0-9\.\,]*[0-9]+)")
_RE_POUNDS_AFTER = re.compile(r"([0-9\.\,]*[0-9]+)£")
_RE_DOLLARS_BEFORE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_RE_DOLLARS_AFTER = re.compile(r"([(0-9\.\,]*[0-9]+)\$")
_RE_DECIMAL = re.compile(r"([0-9]+\.\s*[0-9]+)")
_RE_FRACTION = re.compile(r"([0-9]+/[0-9]+)")
_RE_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_RE_NUMBER = re.compile(r"[0-9]+")

# The official map also lists "[;:：，；]" -> "," and '["’]' -> "'", but it escapes its keys,
# so those two entries only match the literal bracket strings and never fire; colons,
# semicolons, CJK commas and quotes are then deleted by the character filter. We keep that
# behaviour (it is what the models were trained with) and map only these three.
_PUNCT_MAP = {"。": ".", "！": "!", "？": "?"}
_RE_PUNCT_MAP = re.compile("[。！？]")
_PUNCT_CLASS = "".join(re.escape(p) for p in PUNCTUATION)
# A mark after a space or after another mark is dropped: "hi ,there" -> "hi there".
_RE_REPEATED_PUNCT = re.compile(rf"([{_PUNCT_CLASS}\s])([{_PUNCT_CLASS}])+")


@lru_cache(maxsize=1)
def _inflect() -> Any:
    import inflect

    return inflect.engine()


def _words(n: int | str, **kw: Any) -> str:
    return str(_inflect().number_to_words(n, **kw))


def _list_ordinal(m: re.Match[str]) -> str:
    return str(_inflect().ordinal(m.group(1))) + ", "


def _time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    period = "a.m." if hours < 12 else "p.m."
    if hours > 12:
        hours -= 12
    if minutes == 0:
        return f"{_words(hours)} o'clock {period}"
    return f"{_words(hours)} {_words(minutes)} {period}"


def _measure(m: re.Match[str]) -> str:
    unit = m.group(3)
    # "1.2s" reads plural, as does everything except a bare 1 (official heuristic).
    singular = m.group(2) is None and int(m.group(1)[: -len(unit)]) == 1
    return m.group(1)[: -len(unit)] + " " + _UNITS[unit][0 if singular else 1]


def _money(amount: str, major: tuple[str, str], minor: tuple[str, str], zero: str) -> str:
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " " + major[1]
    whole = int(parts[0].replace(",", "")) if parts[0].replace(",", "") else 0
    cents = int(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else 0
    major_unit = major[0] if whole == 1 else major[1]
    minor_unit = minor[0] if cents == 1 else minor[1]
    if whole and cents:
        return f"{whole} {major_unit} and {cents} {minor_unit}"
    if whole:
        return f"{whole} {major_unit}"
    if cents:
        return f"{cents} {minor_unit}"
    return zero


def _pounds(m: re.Match[str]) -> str:
    return _money(m.group(1), ("pound", "pounds"), ("penny", "pence"), "zero pounds")


def _dollars(m: re.Match[str]) -> str:
    return _money(m.group(1), ("dollar", "dollars"), ("cent", "cents"), "zero dollars")


def _decimal(m: re.Match[str]) -> str:
    whole, frac = m.group(1).split(".")
    return whole + " point " + " ".join(frac)


def _fraction(m: re.Match[str]) -> str:
    num, den = (int(x) for x in m.group(0).split("/"))
    num_words = _words(num)
    if den == 1:
        return num_words
    if den == 2:
        return f"{num_words} {'half' if num == 1 else 'halves'}"
    den_words = str(_inflect().ordinal(_words(den)))
    return f"{num_words} {den_words}{'s' if num > 1 else ''}"


def _cardinal(m: re.Match[str]) -> str:
    n = int(m.group(0))
    if 1000 < n < 3000:  # years: 1984 -> nineteen eighty-four
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + _words(n % 100)
        if n % 100 == 0:
            return _words(n // 100) + " hundred"
        return _words(n, andword="", zero="oh", group=2).replace(", ", " ")
    return _words(n, andword="")


def expand(text: str) -> str:
    """Official ``expend.normalize``: verbalise numbers/symbols, keep [A-Za-z '.,?!-]."""
    text = _RE_LIST_ORDINAL.sub(_list_ordinal, text)
    while _RE_ARITHMETIC.search(text):
        text = _RE_ARITHMETIC.sub(lambda m: m.group(1) + _OPERATORS[m.group(8)] + m.group(9), text)
    text = _RE_NEGATIVE.sub(lambda m: "negative " + m.group(2), text)
    text = _RE_COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _RE_TIME.sub(_time, text)
    text = _RE_MEASURE.sub(_measure, text)
    text = _RE_POUNDS_BEFORE.sub(_pounds, text)
    text = _RE_POUNDS_AFTER.sub(_pounds, text)
    text = _RE_DOLLARS_BEFORE.sub(_dollars, text)
    text = _RE_DOLLARS_AFTER.sub(_dollars, text)
    text = _RE_DECIMAL.sub(_decimal, text)
    text = _RE_FRACTION.sub(_fraction, text)
    text = _RE_ORDINAL.sub(lambda m: _words(m.group(0)), text)
    text = _RE_NUMBER.sub(_cardinal, text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.replace("%", " percent")
    text = re.sub(r"[^ A-Za-z'.,?!\-]", "", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    return re.sub(r"(?<!^)(?<![\s])([A-Z])", r" \1", text)


# Full-width ASCII (Ａ１！) -> ASCII. Not in the official code, where such text is deleted by
# the character filter; the language splitter sends full-width Latin here, so read it.
_FULL_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F) if chr(c) not in "。！？"}


def normalize_en(text: str) -> str:
    """Full en normalisation (official ``english.text_normalize``)."""
    text = _RE_PUNCT_MAP.sub(lambda m: _PUNCT_MAP[m.group(0)], text)
    text = text.translate(_FULL_WIDTH)
    text = expand(text)
    return _RE_REPEATED_PUNCT.sub(r"\1", text)
