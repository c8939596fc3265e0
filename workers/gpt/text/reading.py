"""How a written text is read aloud: replacements found on the whole, unaltered text.

The per-language normalisers (:mod:`en_norm`, :mod:`zh_norm`, ``normalize_ja``) follow the
official frontend and see one segment at a time, after the language split. Some writing needs
more context than that, or was simply misread by them: abbreviations ("Dr.", "Jan. 5"),
initials, times with a.m./p.m., versions and IP-like dotted numbers, URLs, e-mail addresses,
currencies they do not know, units after a space, thousands separators in Chinese and
Japanese, and every decimal, percent and clock time in Japanese (whose G2P splits text at
"." ":" "," "%"). :func:`readings` finds those in the whole text *before* it is cut into
segments and returns :class:`Replacement` spans; the segmenter never cuts inside one
(``workers.gpt.text.segment``, ``keep=``), and :func:`spoken` gives a segment's spoken form:
its slice with the replacements inside it applied. The normaliser then reads what is left
(plain numbers, money, percentages, ...) from that spoken form.

The written slice is what subtitles show; the spoken form is what is synthesised and keyed.
Any change to what these rules produce changes spoken forms, hence content keys; a change to
the normalisers behind them must bump ``jobs.keys.READING_VERSION``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from workers.gpt.text.segment import Span, sentence_spans


@dataclass(frozen=True, order=True)
class Replacement:
    """``source[start:end]`` is read as ``spoken``."""

    start: int
    end: int
    spoken: str

    @property
    def span(self) -> Span:
        return Span(self.start, self.end)


Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]

# ----------------------------------------------------------------------------- shared pieces
_URL = r"(?:https?://|www\.)[^\s<>\"'“”‘’「」『』（）()\[\]{}]+"
_EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_TRAILING = ".,;:!?。，！？、)"
_MONTHS = {
    "jan": "January", "feb": "February", "mar": "March", "apr": "April", "may": "May",
    "jun": "June", "jul": "July", "aug": "August", "sep": "September", "sept": "September",
    "oct": "October", "nov": "November", "dec": "December",
}
# Capitalised only: "may 5" in running text is not a date.
_MONTH_NAMES = "|".join(
    sorted({*(k.capitalize() for k in _MONTHS), *_MONTHS.values()}, key=len, reverse=True)
)


def _url_words(url: str, dot: str, slash: str, at: str, colon: str, sep: str = " ") -> str:
    """'https://ex.am/ple' -> 'ex dot am slash ple' (the scheme is not read)."""
    body = re.sub(r"^(?:https?://)", "", url)
    out: list[str] = []
    for token in re.split(r"([./@:])", body):
        if token == ".":
            out.append(dot)
        elif token == "/":
            out.append(slash)
        elif token == "@":
            out.append(at)
        elif token == ":":
            out.append(colon)
        elif token:
            out.append(token.replace("-", " ").replace("_", " "))
    return sep.join(p for p in out if p)


# ----------------------------------------------------------------------------- English
_EN_ABBREVIATIONS = {
    "dr": "Doctor", "mr": "Mister", "mrs": "Missus", "ms": "Miz", "prof": "Professor",
    "jr": "Junior", "sr": "Senior", "vs": "versus", "etc": "et cetera", "approx": "approximately",
    "fig": "figure", "figs": "figures", "dept": "department", "inc": "Incorporated",
    "ltd": "Limited", "corp": "Corporation", "est": "established", "vol": "volume",
    "gen": "General", "capt": "Captain", "lt": "Lieutenant", "sgt": "Sergeant", "rev": "Reverend",
    "mt": "Mount", "ave": "Avenue", "blvd": "Boulevard", "cf": "compare", "pp": "pages", "p": "page",
}
_EN_DOTTED = {"e.g.": "for example", "i.e.": "that is", "a.m.": "A M", "p.m.": "P M"}
_EN_UNITS = {
    "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"), "mg": ("milligram", "milligrams"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"), "ml": ("milliliter", "milliliters"),
    "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"), "KB": ("kilobyte", "kilobytes"),
    "TB": ("terabyte", "terabytes"), "ms": ("millisecond", "milliseconds"),
    "mph": ("mile per hour", "miles per hour"), "kWh": ("kilowatt hour", "kilowatt hours"),
    "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
}
_CURRENCY_EN = {"$": ("dollar", "dollars"), "€": ("euro", "euros"), "£": ("pound", "pounds")}


def _number_words(n: int) -> str:
    from workers.gpt.text.en_norm import _words

    return _words(n, andword="")


def _ordinal_words(n: int) -> str:
    from workers.gpt.text.en_norm import _inflect

    return str(_inflect().ordinal(_number_words(n)))


def _en_clock(hour: str, minute: str | None, period: str) -> str:
    words = _number_words(int(hour))
    if minute and int(minute):
        words += " " + ("oh " + _number_words(int(minute)) if int(minute) < 10 else _number_words(int(minute)))
    return f"{words} {period.upper()} M"


def _en_date(m: re.Match[str]) -> str:
    month = _MONTHS.get(m.group(1).lower(), m.group(1))
    return f"{month} {_ordinal_words(int(m.group(2)))}"


def _en_abbreviation(m: re.Match[str]) -> str:
    word = m.group(1)
    if word.lower() == "st":
        # "St. Louis" (a saint) before a name; "Main St." (a street) otherwise.
        return "Saint" if re.match(r"\s+[A-Z]", m.string[m.end() :]) else "Street"
    if word.lower() == "no" and not re.match(r"\s*\d", m.string[m.end() :]):
        return m.group(0)
    reading = "number" if word.lower() == "no" else _EN_ABBREVIATIONS[word.lower()]
    return reading[0].upper() + reading[1:] if word[0].isupper() else reading


def _en_money(m: re.Match[str]) -> str:
    return f"{m.group(2)} {m.group(3)} {_CURRENCY_EN[m.group(1)][1]}"


def _en_euros(m: re.Match[str]) -> str:
    whole, _, cents = m.group(1).replace(",", "").partition(".")
    unit = "euro" if whole == "1" else "euros"
    out = f"{whole} {unit}"
    if cents and int(cents):
        value = int(cents.ljust(2, "0")[:2])
        out += f" and {value} {'cent' if value == 1 else 'cents'}"
    return out


def _en_unit(m: re.Match[str]) -> str:
    singular, plural = _EN_UNITS[m.group(2)]
    return f"{m.group(1)} {singular if m.group(1) == '1' else plural}"


_EN_RULES: list[Rule] = [
    (re.compile(_URL), lambda m: _url_words(m.group(0), "dot", "slash", "at", "colon")),
    (re.compile(_EMAIL), lambda m: _url_words(m.group(0), "dot", "slash", "at", "colon")),
    # Versions and other numbers with two or more dots: 2.1.3 -> 2 point 1 point 3.
    (re.compile(r"\b[vV]?(\d+(?:\.\d+){2,})\b"), lambda m: " point ".join(m.group(1).split("."))),
    (re.compile(r"\b[vV](\d+\.\d+)\b"), lambda m: "version " + " point ".join(m.group(1).split("."))),
    (
        re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s?([ap])\.\s?m\.", re.IGNORECASE),
        lambda m: _en_clock(m.group(1), m.group(2), m.group(3)),
    ),
    (re.compile(rf"\b({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?![.,:]\d)"), lambda m: _en_date(m)),
    (re.compile(r"(?<![\w.])(e\.g\.|i\.e\.|a\.m\.|p\.m\.)", re.IGNORECASE), lambda m: _EN_DOTTED[m.group(1).lower()]),
    (re.compile(r"([$€£])\s?(\d+(?:\.\d+)?)\s+(thousand|million|billion|trillion)\b"), _en_money),
    (re.compile(r"€\s?(\d[\d,]*(?:\.\d+)?)"), _en_euros),
    (re.compile(r"¥\s?(\d[\d,]*)"), lambda m: m.group(1) + " yen"),
    (re.compile(r"(\d+(?:\.\d+)?)\s(" + "|".join(_EN_UNITS) + r")\b(?!\.\w)"), _en_unit),
    (re.compile(r"\b(" + "|".join(sorted({*_EN_ABBREVIATIONS, "st", "no"}, key=len, reverse=True)) + r")\.", re.IGNORECASE), _en_abbreviation),
    # Dotted capitals (U.S.) and initials (J. R. R. Tolkien) are read as letters.
    (re.compile(r"\b((?:[A-Z]\.){2,})"), lambda m: " ".join(m.group(1).replace(".", ""))),
    (re.compile(r"\b([A-Z])\.(?=\s+[A-Z])"), lambda m: m.group(1)),
    (re.compile(r"\s&\s"), lambda m: " and "),
    # Letters glued to digits (Q3, MP3, GPT4): the normaliser would read "Qthree".
    (re.compile(r"\b([A-Za-z]+)(\d+)\b"), lambda m: f"{m.group(1)} {m.group(2)}"),
    # A single quote that quotes (not an apostrophe) is not read; the normaliser would keep it
    # and split the next capital off it ("' Go").
    (re.compile(r"(?<![\w])'|'(?![\w])"), lambda m: ""),
]


# ----------------------------------------------------------------------------- Chinese
_CURRENCY_ZH = {"$": "美元", "€": "欧元", "£": "英镑", "¥": "日元"}


def _strip_thousands(value: str) -> str:
    return value.replace(",", "") if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", value) else value


_ZH_UNITS = {
    "km": "千米", "kg": "千克", "cm": "厘米", "mm": "毫米", "m": "米", "g": "克", "mg": "毫克",
    "ml": "毫升", "L": "升", "GB": "GB", "MB": "MB", "s": "秒", "ms": "毫秒", "h": "小时",
    "min": "分钟", "km/h": "千米每小时",
}
_ZH_UNIT_ALT = "|".join(sorted((u for u, w in _ZH_UNITS.items() if u != w), key=len, reverse=True))

_ZH_RULES: list[Rule] = [
    (re.compile(_URL), lambda m: _url_words(m.group(0), "点", "斜杠", "艾特", "冒号", "")),
    (re.compile(_EMAIL), lambda m: _url_words(m.group(0), "点", "斜杠", "艾特", "冒号", "")),
    (re.compile(r"(?<![\d.])[vV]?(\d+(?:\.\d+){2,})(?![\d.])"), lambda m: "点".join(m.group(1).split("."))),
    (re.compile(r"[$€£]\s?(\d[\d,]*(?:\.\d+)?)"), lambda m: _strip_thousands(m.group(1)) + _CURRENCY_ZH[m.group(0)[0]]),
    (re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d.,])"), lambda m: _strip_thousands(m.group(0))),
    # Units are Latin letters, which the language split hands to the English reader ("3.5km"
    # read "三点五 km"): give them their Chinese names beside the number.
    (re.compile(rf"(\d+(?:\.\d+)?)\s?({_ZH_UNIT_ALT})(?![A-Za-z])"), lambda m: m.group(1) + _ZH_UNITS[m.group(2)]),
]


# ----------------------------------------------------------------------------- Japanese
_CURRENCY_JA = {"$": ("ドル", "セント"), "€": ("ユーロ", "セント"), "£": ("ポンド", "ペンス")}


def _ja_number(value: str) -> str:
    """'1,000.5' -> '1000点5': OpenJTalk reads digit strings, and 点 as the decimal point."""
    value = _strip_thousands(value)
    return "点".join(value.split(".", 1))


def _ja_money(m: re.Match[str]) -> str:
    major, minor = _CURRENCY_JA[m.group(1)]
    whole, _, cents = _strip_thousands(m.group(2)).partition(".")
    out = whole + major
    if cents and int(cents):
        out += str(int(cents.ljust(2, "0")[:2])) + minor
    return out


def _ja_clock(m: re.Match[str]) -> str:
    out = str(int(m.group(1))) + "時"
    if int(m.group(2)):
        out += "半" if m.group(2) == "30" else str(int(m.group(2))) + "分"
    return out


_JA_UNITS = {
    "km": "キロメートル", "kg": "キログラム", "cm": "センチメートル", "mm": "ミリメートル",
    "m": "メートル", "g": "グラム", "mg": "ミリグラム", "ml": "ミリリットル", "L": "リットル",
    "GB": "ギガバイト", "MB": "メガバイト", "ms": "ミリ秒", "km/h": "キロメートル毎時",
}
_JA_UNIT_ALT = "|".join(sorted(_JA_UNITS, key=len, reverse=True))

_JA_RULES: list[Rule] = [
    (re.compile(_URL), lambda m: _url_words(m.group(0), "ドット", "スラッシュ", "アットマーク", "コロン", "")),
    (re.compile(_EMAIL), lambda m: _url_words(m.group(0), "ドット", "スラッシュ", "アットマーク", "コロン", "")),
    (re.compile(r"(?<![\d.])[vV]?(\d+(?:\.\d+){2,})(?![\d.])"), lambda m: "点".join(m.group(1).split("."))),
    (re.compile(r"([$€£])\s?(\d[\d,]*(?:\.\d+)?)"), _ja_money),
    (re.compile(r"(?<!\d)([01]?\d|2[0-3])[:：]([0-5]\d)(?!\d)"), _ja_clock),
    (re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?[%％]"), lambda m: _ja_number(m.group(1)) + "パーセント"),
    (
        re.compile(rf"(\d[\d,]*(?:\.\d+)?)\s?({_JA_UNIT_ALT})(?![A-Za-z])"),
        lambda m: _ja_number(m.group(1)) + _JA_UNITS[m.group(2)],
    ),
    (re.compile(r"(?<![\d.])\d[\d,]*\.\d+(?![\d.])|(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d.,])"), lambda m: _ja_number(m.group(0))),
]

_RULES = {"en": _EN_RULES, "zh": _ZH_RULES, "ja": _JA_RULES}
_RE_KANA = re.compile("[\u3040-\u30ff]")
_RE_HAN = re.compile("[\u4e00-\u9fff]")


def _language_of(text: str, language: str) -> str:
    if language in _RULES:
        return language
    if _RE_KANA.search(text):
        return "ja"
    return "zh" if _RE_HAN.search(text) else "en"


def readings(text: str, language: str) -> list[Replacement]:
    """Replacements for ``text`` read in ``language`` ("en", "zh", "ja" or "auto", which picks
    per sentence by script). Earlier rules win where matches overlap. An abbreviation whose
    period also ends a sentence keeps a period in its reading."""
    out: list[Replacement] = []
    for sentence in sentence_spans(text, language if language in _RULES else "en"):
        lang = _language_of(sentence.text(text), language)
        taken: list[Replacement] = []
        for pattern, read in _RULES[lang]:
            for m in pattern.finditer(text, sentence.start, sentence.end):
                start, end = m.span()
                if pattern.pattern in (_URL, _EMAIL):
                    while end > start and text[end - 1] in _TRAILING:
                        end -= 1
                    m = pattern.match(text[:end], start) or m
                if any(r.start < end and start < r.end for r in taken):
                    continue
                spoken = read(m)
                if spoken == text[start:end]:
                    continue
                if text[end - 1] == "." and end == sentence.end and not spoken.endswith("."):
                    spoken += "."
                taken.append(Replacement(start, end, spoken))
        out.extend(taken)
    return sorted(out)


def overlay(first: Iterable[Replacement], second: Iterable[Replacement]) -> list[Replacement]:
    """``first`` and those of ``second`` that overlap none of them (a lexicon over the rules)."""
    kept = list(first)
    extra = [r for r in second if not any(k.start < r.end and r.start < k.end for k in kept)]
    return sorted(kept + extra)


def spoken(text: str, span: Span, replacements: Sequence[Replacement]) -> str:
    """The spoken form of ``text[span]``: its slice with the replacements inside it applied.
    Replacements that straddle the span's edges are not applied (segments never cut them)."""
    out: list[str] = []
    pos = span.start
    first = bisect.bisect_left(replacements, span.start, key=lambda r: r.start)
    for r in replacements[first:]:
        if r.start >= span.end:
            break
        if r.end > span.end:
            continue
        out.append(text[pos : r.start])
        out.append(r.spoken)
        pos = r.end
    out.append(text[pos : span.end])
    return "".join(out)


def read_aloud(text: str, language: str) -> str:
    """The spoken form of a whole text (before the normaliser)."""
    return spoken(text, Span(0, len(text)), readings(text, language))
