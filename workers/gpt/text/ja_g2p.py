"""Japanese G2P with pyopenjtalk: phones plus the v2 prosody marks.

The official v2 path (``japanese.g2p(..., with_prosody=True)``) runs OpenJTalk's full-context
labels through the ESPnet prosody rule: ``[`` pitch rise, ``]`` pitch fall, ``#`` accent
phrase boundary, ``_`` pause, unvoiced vowels written as voiced. Only ``[`` and ``]`` were
added to the v2 table, so ``#`` becomes ``UNK`` and ``_`` (a pause) is the pad symbol, id 0.
That is what the official models were trained on, so it is reproduced here.

Dictionary: OpenJTalk needs the NAIST-jdic MeCab dictionary. pyopenjtalk would download it
on first use; we point it at Debian's ``open-jtalk-mecab-naist-jdic``
(``/var/lib/mecab/dic/open-jtalk/naist-jdic``) or ``$OPEN_JTALK_DICT_DIR`` before importing
it, and refuse to run rather than download. The official user dictionary is not loaded.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from workers.gpt.text.symbols import PUNCTUATION

DEBIAN_DICT_DIR = "/var/lib/mecab/dic/open-jtalk/naist-jdic"

_JA_CHARS = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_RE_JA = re.compile(f"[{_JA_CHARS}]")
_RE_NOT_JA = re.compile(f"[^{_JA_CHARS}]")
_MARK_MAP = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".",
             "·": ",", "、": ",", "...": "…"}
_PUNCT_CLASS = "".join(re.escape(p) for p in PUNCTUATION)
_RE_REPEATED_PUNCT = re.compile(f"([{_PUNCT_CLASS}])([{_PUNCT_CLASS}])+")


class JapaneseUnavailable(RuntimeError):
    """pyopenjtalk or its dictionary is missing (we never download it)."""


@lru_cache(maxsize=1)
def _openjtalk() -> ModuleType:
    dict_dir = os.environ.get("OPEN_JTALK_DICT_DIR") or DEBIAN_DICT_DIR
    if not (Path(dict_dir) / "sys.dic").is_file():
        raise JapaneseUnavailable(
            f"OpenJTalk dictionary not found at {dict_dir!r}; install open-jtalk-mecab-naist-jdic "
            "or set OPEN_JTALK_DICT_DIR"
        )
    # pyopenjtalk reads this variable once, at import, and downloads if the folder is absent.
    os.environ["OPEN_JTALK_DICT_DIR"] = dict_dir
    try:
        import pyopenjtalk  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise JapaneseUnavailable("pyopenjtalk is not installed") from exc
    configured = pyopenjtalk.OPEN_JTALK_DICT_DIR
    configured = configured.decode() if isinstance(configured, bytes) else str(configured)
    if Path(configured) != Path(dict_dir):
        raise JapaneseUnavailable(
            f"pyopenjtalk was imported before OPEN_JTALK_DICT_DIR was set (uses {configured!r})"
        )
    return pyopenjtalk


def normalize_ja(text: str) -> str:
    """Official ``japanese.text_normalize``: only repeated punctuation is collapsed."""
    return _RE_REPEATED_PUNCT.sub(r"\1", text)


def _feature(pattern: str, label: str) -> int:
    m = re.search(pattern, label)
    return int(m.group(1)) if m else -50


def prosody_phones(text: str) -> list[str]:
    """OpenJTalk labels -> phones with ``^ $ ? [ ] # _`` marks (ESPnet rule, r9y9 variant)."""
    ojt = _openjtalk()
    labels = ojt.make_label(ojt.run_frontend(text))
    phones: list[str] = []
    for n, lab in enumerate(labels):
        p3 = re.search(r"\-(.*?)\+", lab).group(1)  # type: ignore[union-attr]
        if p3 in "AEIOU":  # unvoiced vowel -> plain vowel
            p3 = p3.lower()
        if p3 == "sil":
            if n == 0:
                phones.append("^")
            elif n == len(labels) - 1:
                e3 = _feature(r"!(\d+)_", lab)  # 1 = question
                if e3 in (0, 1):
                    phones.append("$" if e3 == 0 else "?")
            continue
        if p3 == "pau":
            phones.append("_")
            continue
        phones.append(p3)
        a1 = _feature(r"/A:([0-9\-]+)\+", lab)
        a2 = _feature(r"\+(\d+)\+", lab)
        a3 = _feature(r"\+(\d+)/", lab)
        f1 = _feature(r"/F:(\d+)_", lab)
        a2_next = _feature(r"\+(\d+)\+", labels[n + 1])
        if a3 == 1 and a2_next == 1 and p3 in "aeiouAEIOUNcl":
            phones.append("#")  # accent phrase boundary
        elif a1 == 0 and a2_next == a2 + 1 and a2 != f1:
            phones.append("]")  # pitch falls after the accent nucleus
        elif a2 == 1 and a2_next == 2:
            phones.append("[")  # pitch rises after the first mora
    return phones


def g2p_ja(norm_text: str) -> list[str]:
    """Normalised Japanese -> phones (before the UNK mapping), official v2 ``g2p``."""
    text = norm_text.replace("％", "パーセント").lower()
    pieces = _RE_NOT_JA.split(text)
    marks = _RE_NOT_JA.findall(text)
    phones: list[str] = []
    for i, piece in enumerate(pieces):
        if _RE_JA.match(piece):
            phones += prosody_phones(piece)[1:-1]  # drop the ^ and $/? ends
        if i < len(marks) and marks[i] != " ":
            phones.append(marks[i].replace(" ", ""))
    return [_MARK_MAP.get(p, p) for p in phones]
