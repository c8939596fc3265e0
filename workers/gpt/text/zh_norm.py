"""Chinese text normalisation: numbers, dates, times, units, phone numbers and punctuation.

Follows the order and reading rules of the official ``text/zh_normalization`` (itself from
PaddleSpeech) and ``chinese2.text_normalize``: split into clauses, verbalise non-standard
words per clause, then map punctuation onto the v2 set and drop everything that is neither a
CJK ideograph nor one of ``! ? … , . -``. Numbers are verbalised by our own rules (the same
readings as the official ``num.py``: 十 not 一十 at the start, 幺 in codes, 点 + digits for
decimals); ``cn2an`` is not used because its readings differ from the official ones in exactly
the places that matter here (leading 一十, digit-by-digit codes, 两).

Deliberate deviations from the official code, each a fix of an obvious misreading:
* in a time range the second minute is read from the second time (official re-uses the first,
  so "8:30-9:15" became 九点半);
* unit abbreviations are only expanded right after a number (official replaced every "m"/"s"
  anywhere in the clause, and "mm" could never match because "m" came first).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from workers.gpt.text.symbols import PUNCTUATION

_DIGITS = "零一二三四五六七八九"
# Largest power of ten first; 万 and 亿 group by four digits as in written Chinese.
_UNITS = ((8, "亿"), (4, "万"), (3, "千"), (2, "百"), (1, "十"))


# ----------------------------------------------------------------------------- numbers
def _read_group(digits: str, zero_prefix: bool = True) -> list[str]:
    """Cardinal reading of a digit string, as a list of characters (no leading 一十 rule)."""
    stripped = digits.lstrip("0")
    if not stripped:
        return []
    if len(stripped) == 1:
        # "05" inside a bigger number is read 零五.
        if zero_prefix and len(stripped) < len(digits):
            return [_DIGITS[0], _DIGITS[int(stripped)]]
        return [_DIGITS[int(stripped)]]
    power, unit = next((p, u) for p, u in _UNITS if p < len(stripped))
    head, tail = digits[:-power], digits[-power:]
    return _read_group(head) + [unit] + _read_group(tail)


def read_cardinal(digits: str) -> str:
    """'10086' -> 一万零八十六; '12' -> 十二; '' -> ''."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return _DIGITS[0]
    chars = _read_group(digits)
    if len(chars) >= 2 and chars[0] == "一" and chars[1] == "十":
        chars = chars[1:]
    return "".join(chars)


def read_digits(digits: str, alt_one: bool = False) -> str:
    """Digit by digit ('2024' -> 二零二四); ``alt_one`` reads 1 as 幺 (phone numbers, codes)."""
    out = "".join(_DIGITS[int(d)] for d in digits)
    return out.replace("一", "幺") if alt_one else out


def read_number(value: str) -> str:
    """Cardinal with optional decimals: '3.14' -> 三点一四, '.5' -> 零点五, '3.20' -> 三点二."""
    parts = value.split(".")
    if len(parts) > 2:
        raise ValueError(f"more than one decimal point in {value!r}")
    integer = parts[0]
    decimal = parts[1].rstrip("0") if len(parts) == 2 else ""
    out = read_cardinal(integer)
    if decimal:
        out = (out or _DIGITS[0]) + "点" + read_digits(decimal)
    return out


def _read_time_part(value: str) -> str:
    out = read_number(value.lstrip("0"))
    return _DIGITS[0] + out if value.startswith("0") else out


# ----------------------------------------------------------------------------- rules
_NUM = r"(-?)((\d+)(\.\d+)?)"
_RE_DATE = re.compile(
    r"(\d{4}|\d{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?"
)
_RE_DATE2 = re.compile(r"(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")
_TIME = r"([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?"
_RE_TIME_RANGE = re.compile(_TIME + r"(~|-)" + _TIME)
_RE_TIME = re.compile(_TIME)
_UNIT_ALTS = r"%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s"
_RE_TO_RANGE = re.compile(
    r"((-?)((\d+)(\.\d+)?)|(\.(\d+)))(" + _UNIT_ALTS + r")[~]((-?)((\d+)(\.\d+)?)|(\.(\d+)))(" + _UNIT_ALTS + r")"
)
_RE_TEMPERATURE = re.compile(r"(-?)(\d+(\.\d+)?)(°C|℃|度|摄氏度)")
# Longest abbreviation first so "mm" is not read as 米米.
_MEASURES = (
    ("cm²", "平方厘米"), ("cm2", "平方厘米"), ("cm³", "立方厘米"), ("cm3", "立方厘米"),
    ("m²", "平方米"), ("m2", "平方米"), ("m³", "立方米"), ("m3", "立方米"),
    ("cm", "厘米"), ("mm", "毫米"), ("km", "千米"), ("kg", "千克"), ("ml", "毫升"),
    ("db", "分贝"), ("ds", "毫秒"), ("m", "米"), ("s", "秒"),
)
_MEASURE_WORDS = dict(_MEASURES)
_RE_MEASURE = re.compile(
    r"(?<=\d)(" + "|".join(re.escape(a) for a, _ in _MEASURES) + r")(?![A-Za-z])"
)
_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_SUPERSCRIPT_PLAIN = dict(zip(_SUPERSCRIPTS, "0123456789xyn"))
_OPERAND = (
    rf"((-?)((\d+)(\.\d+)?[{_SUPERSCRIPTS}]*)|(\.\d+[{_SUPERSCRIPTS}]*)|([A-Za-z][{_SUPERSCRIPTS}]*))"
)
_RE_ARITHMETIC = re.compile(_OPERAND + r"([\+\-\×÷=])" + _OPERAND)
_OPERATORS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
_RE_POWER = re.compile(f"[{_SUPERSCRIPTS}]+")
_RE_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")
_RE_PERCENT = re.compile(r"(-?)(\d+(\.\d+)?)%")
_RE_MOBILE = re.compile(r"(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
_RE_LANDLINE = re.compile(r"(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
_RE_HOTLINE = re.compile(r"(400)(-)?\d{3}(-)?\d{4}")
_RE_RANGE = re.compile(r"(?<![\d\+\-\×÷=])(" + _NUM + r")[-~](" + _NUM + r")(?![\d\+\-\×÷=])")
_RE_NEGATIVE = re.compile(r"(-)(\d+)")
_RE_DECIMAL = re.compile(r"(-?)((\d+)(\.\d+))|(\.(\d+))")
_QUANTIFIERS = (
    "处|台|架|枚|趟|幅|平|方|堵|间|床|株|批|项|例|列|篇|栋|注|亩|封|艘|把|目|套|段|人|所|朵|匹|张|座|回|场|"
    "尾|条|个|首|阙|阵|网|炮|顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|砣|客|贯|扎|捆|刀|令|打|手|"
    "罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|跳|枝|件|贴|针|线|管|名|位|身|堂|课|本|页|家|户|层|"
    "丝|毫|厘|分|钱|两|斤|铢|石|钧|锱|忽|(千|毫|微)克|(公)分|寸|尺|丈|里|寻|常|铺|程|(千|分|厘|毫|微)米|米|"
    "撮|勺|合|升|斗|盘|碗|碟|叠|桶|笼|盆|盒|杯|斛|锅|簋|篮|罐|瓶|壶|卮|盏|箩|箱|煲|啖|袋|钵|年|月|日|季|"
    "刻|时|周|天|秒|小时|旬|纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|幢|堆|根|道|面|片|块|元|"
    "(亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|美|)元|(亿|千万|百万|万|千|百|十|)吨|"
    "(亿|千万|百万|万|千|百|)块|角|毛"
)
_RE_NUM_QUANTIFIER = re.compile(r"(\d+)([多余几\+])?(" + _QUANTIFIERS + r")")
_RE_CODE = re.compile(r"\d{3}\d*")
_RE_ANY_NUMBER = re.compile(r"(-?)((\d+)(\.\d+)?)|(\.(\d+))")


def _sub_date(m: re.Match[str]) -> str:
    out = read_digits(m.group(1)) + "年"
    if m.group(3):
        out += read_cardinal(m.group(3)) + "月"
    if m.group(5):
        out += read_cardinal(m.group(5)) + m.group(9)
    return out


def _sub_date2(m: re.Match[str]) -> str:
    return (
        read_digits(m.group(1)) + "年" + read_cardinal(m.group(3)) + "月"
        + read_cardinal(m.group(4)) + "日"
    )


def _clock(hour: str, minute: str, second: str | None) -> str:
    out = read_number(hour) + "点"
    if minute.lstrip("0"):
        out += "半" if int(minute) == 30 else _read_time_part(minute) + "分"
    if second and second.lstrip("0"):
        out += _read_time_part(second) + "秒"
    return out


def _sub_time(m: re.Match[str]) -> str:
    return _clock(m.group(1), m.group(2), m.group(4))


def _sub_time_range(m: re.Match[str]) -> str:
    return _clock(m.group(1), m.group(2), m.group(4)) + "至" + _clock(m.group(6), m.group(7), m.group(9))


def _sub_temperature(m: re.Match[str]) -> str:
    unit = "摄氏度" if m.group(4) == "摄氏度" else "度"
    return ("零下" if m.group(1) else "") + read_number(m.group(2)) + unit


def _sub_arithmetic(m: re.Match[str]) -> str:
    return m.group(1) + _OPERATORS[m.group(8)] + m.group(9)


def _sub_power(m: re.Match[str]) -> str:
    return "的" + "".join(_SUPERSCRIPT_PLAIN[c] for c in m.group(0)) + "次方"


def _sub_fraction(m: re.Match[str]) -> str:
    return ("负" if m.group(1) else "") + read_number(m.group(3)) + "分之" + read_number(m.group(2))


def _sub_percent(m: re.Match[str]) -> str:
    return ("负" if m.group(1) else "") + "百分之" + read_number(m.group(2))


def _read_phone(text: str, sep: str) -> str:
    parts = text.strip("+").split(sep) if sep else text.strip("+").split()
    return "，".join(read_digits(p, alt_one=True) for p in parts if p)


def _sub_any_number(m: re.Match[str]) -> str:
    if m.group(5):
        return read_number(m.group(5))
    return ("负" if m.group(1) else "") + read_number(m.group(2))


def _sub_range(m: re.Match[str]) -> str:
    first = _RE_ANY_NUMBER.sub(_sub_any_number, m.group(1))
    second = _RE_ANY_NUMBER.sub(_sub_any_number, m.group(6))
    return first + "到" + second


def _sub_num_quantifier(m: re.Match[str]) -> str:
    extra = "多" if m.group(2) == "+" else (m.group(2) or "")
    return read_number(m.group(1)) + extra + m.group(3)


_GREEK = (
    ("α", "阿尔法"), ("β", "贝塔"), ("γ", "伽玛"), ("Γ", "伽玛"), ("δ", "德尔塔"), ("Δ", "德尔塔"),
    ("ε", "艾普西龙"), ("ζ", "捷塔"), ("η", "依塔"), ("θ", "西塔"), ("Θ", "西塔"), ("ι", "艾欧塔"),
    ("κ", "喀帕"), ("λ", "拉姆达"), ("Λ", "拉姆达"), ("μ", "缪"), ("ν", "拗"), ("ξ", "克西"),
    ("Ξ", "克西"), ("ο", "欧米克伦"), ("π", "派"), ("Π", "派"), ("ρ", "肉"), ("ς", "西格玛"),
    ("Σ", "西格玛"), ("σ", "西格玛"), ("τ", "套"), ("υ", "宇普西龙"), ("φ", "服艾"), ("Φ", "服艾"),
    ("χ", "器"), ("ψ", "普赛"), ("Ψ", "普赛"), ("ω", "欧米伽"), ("Ω", "欧米伽"),
)
_CIRCLED = dict(zip("①②③④⑤⑥⑦⑧⑨⑩", "一二三四五六七八九十"))
_POST_REPLACE: dict[str, str] = {
    "/": "每", **_CIRCLED, **dict(_GREEK), "+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等",
}
_RE_POST_DROP = re.compile(r"[-——《》【】<=>{}()（）#&@“”^_|\\]")
_RE_PRE_DROP = re.compile(r"[——《》【】<>{}()（）#&@“”^_|\\]")
_RE_CLAUSE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")

# Full-width ASCII letters/digits and the ideographic space -> half width.
_FULL_TO_HALF = {0xFF00 + (ord(c) - 0x20): ord(c) for c in
                 "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}
_FULL_TO_HALF[0x3000] = ord(" ")


@lru_cache(maxsize=1)
def _t2s_converter() -> Callable[[str], str]:
    """Traditional -> simplified. Uses OpenCC when installed (the official code ships its own
    character table); without it characters pass through, which pypinyin still reads."""
    try:
        import opencc  # type: ignore[import-untyped]
    except ImportError:
        return lambda s: s
    conv = opencc.OpenCC("t2s")
    return lambda s: str(conv.convert(s))


def normalize_clause(clause: str) -> str:
    """Verbalise numbers and symbols in one clause (official ``normalize_sentence``)."""
    s = _t2s_converter()(clause).translate(_FULL_TO_HALF)
    s = _RE_DATE.sub(_sub_date, s)
    s = _RE_DATE2.sub(_sub_date2, s)
    s = _RE_TIME_RANGE.sub(_sub_time_range, s)
    s = _RE_TIME.sub(_sub_time, s)
    s = _RE_TO_RANGE.sub(lambda m: m.group(0).replace("~", "至"), s)
    s = _RE_TEMPERATURE.sub(_sub_temperature, s)
    s = _RE_MEASURE.sub(lambda m: _MEASURE_WORDS[m.group(1)], s)
    while _RE_ARITHMETIC.search(s):
        s = _RE_ARITHMETIC.sub(_sub_arithmetic, s)
    s = _RE_POWER.sub(_sub_power, s)
    s = _RE_FRACTION.sub(_sub_fraction, s)
    s = _RE_PERCENT.sub(_sub_percent, s)
    s = _RE_MOBILE.sub(lambda m: _read_phone(m.group(0), ""), s)
    s = _RE_LANDLINE.sub(lambda m: _read_phone(m.group(0), "-"), s)
    s = _RE_HOTLINE.sub(lambda m: _read_phone(m.group(0), "-"), s)
    s = _RE_RANGE.sub(_sub_range, s)
    s = _RE_NEGATIVE.sub(lambda m: "负" + read_cardinal(m.group(2)), s)
    s = _RE_DECIMAL.sub(_sub_any_number, s)
    s = _RE_NUM_QUANTIFIER.sub(_sub_num_quantifier, s)
    s = _RE_CODE.sub(lambda m: read_digits(m.group(0), alt_one=True), s)
    s = _RE_ANY_NUMBER.sub(_sub_any_number, s)
    s = "".join(_POST_REPLACE.get(c, c) for c in s)
    return _RE_POST_DROP.sub("", s)


def split_clauses(text: str) -> list[str]:
    """Official ``TextNormalizer._split`` for zh: drop spaces and brackets, cut after clause
    punctuation (keeping it)."""
    text = _RE_PRE_DROP.sub("", text.replace(" ", ""))
    text = _RE_CLAUSE_END.sub(r"\1\n", text).strip()
    return [c.strip() for c in re.split(r"\n+", text)]


# ----------------------------------------------------------------------------- punctuation
_PUNCT_MAP = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",",
    "、": ",", "...": "…", "$": ".", "/": ",", "—": "-", "~": "…", "～": "…",
}
_RE_PUNCT_MAP = re.compile("|".join(re.escape(k) for k in _PUNCT_MAP))
_PUNCT_CLASS = "".join(re.escape(p) for p in PUNCTUATION)
_RE_NOT_ZH = re.compile(r"[^\u4e00-\u9fa5" + _PUNCT_CLASS + r"]+")
_RE_REPEATED_PUNCT = re.compile(f"([{_PUNCT_CLASS}])([{_PUNCT_CLASS}])+")


def collapse_repeated_punctuation(text: str) -> str:
    """'好!!!' -> '好!': repeated marks leak the reference prosody (official comment)."""
    return _RE_REPEATED_PUNCT.sub(r"\1", text)


def map_punctuation(text: str) -> str:
    """Map CJK punctuation onto the v2 set and drop all but ideographs and that set."""
    # 嗯 (n) and 呣 (m) have no initial/final split in the v2 inventory; read them 恩/母.
    text = text.replace("嗯", "恩").replace("呣", "母")
    text = _RE_PUNCT_MAP.sub(lambda m: _PUNCT_MAP[m.group(0)], text)
    return _RE_NOT_ZH.sub("", text)


def normalize_zh(text: str) -> str:
    """Full zh normalisation (official ``chinese2.text_normalize``); output has one character
    per word2ph entry: CJK ideographs and ``! ? … , . -`` only."""
    out = "".join(map_punctuation(normalize_clause(c)) for c in split_clauses(text))
    return collapse_repeated_punctuation(out)
