"""The GPT-SoVITS phone inventories and the phone -> id mapping: v2 (732 symbols; also v2Pro,
v2ProPlus) and v1 (322 symbols).

Phone ids are positions in these lists, so their order is a format fact: the T2S text embedding
([732, 512]; v1 [512, 512], rows 322.. unused) and the SoVITS text embedding ([732, 192]; v1
[322, 192]) are indexed by them. The v1 table (official ``text/symbols.py``) is the sorted set of
pad, pinyin initials, toned finals, Japanese phones, punctuation + SP/SP2/SP3/UNK and ARPAbet:
322 symbols. The v2 table (official ``text/symbols2.py``) is that same sorted set, then the
Japanese pitch marks ``[`` ``]``, then sorted Korean jamo, then sorted Cantonese (jyutping)
phones; so a v1 id is the v2 id of the same phone, and v2 ids >= 322 have no v1 phone.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD = "_"

# Sentence punctuation kept as phones; everything else is mapped onto these by the normalisers.
PUNCTUATION: tuple[str, ...] = ("!", "?", "…", ",", ".", "-")
SPECIAL_PHONES: tuple[str, ...] = ("SP", "SP2", "SP3", "UNK")

ZH_INITIALS: tuple[str, ...] = tuple(
    "AA EE OO b c ch d f g h j k l m n p q r s sh t w x y z zh".split()
)
# Toneless finals; each one appears with tones 1..5 (5 = neutral).
ZH_FINALS: tuple[str, ...] = tuple(
    (
        "E En a ai an ang ao e ei en eng er i i0 ia ian iang iao ie in ing iong ir iu o ong ou "
        "u ua uai uan uang ui un uo v van ve vn"
    ).split()
)
JA_PHONES: tuple[str, ...] = tuple(
    "I N U a b by ch cl d dy e f g gy h hy i j k ky m my n ny o p py r ry s sh t ts u v w y z".split()
)
ARPABET: frozenset[str] = frozenset(
    (
        "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH "
        "EH0 EH1 EH2 ER ER0 ER1 ER2 EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG "
        "OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 UH1 UH2 UW0 UW1 UW2 V W Y Z ZH"
    ).split()
)
JA_PITCH_MARKS: tuple[str, ...] = ("[", "]")  # rising / falling pitch (v2 Japanese prosody)
KO_PHONES = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"

# Cantonese phones are "Y" + jyutping part (+ tone). Compact form: part -> which tones exist,
# "0" meaning the toneless spelling. Expands to exactly the 379 official yue symbols.
_YUE_COMPACT = (
    "a:0123456 aa:0123456 aai:123456 aak:123456 aam:123456 aan:123456 aang:123456 aap:123456 "
    "aat:123456 aau:123456 ai:0123456 ak:0123456 am:123456 an:123456 ang:123456 ap:123456 "
    "at:123456 au:0123456 b:0 c:0 d:0 e:0123456 ei:123456 ek:123456 eng:123456 eoi:123456 "
    "eon:123456 eot:123456 f:0 g:0123456 gw:0 h:0 i:123456 ik:123456 im:123456 in:123456 "
    "ing:123456 ip:123456 it:123456 iu:123456 j:0 k:0123456 kw:0 l:0 m:0123456 n:0123456 ng:0 "
    "o:0123456 oe:123456 oek:123456 oeng:123456 oi:0123456 ok:0123456 on:0123456 ong:123456 "
    "ot:123456 ou:0123456 p:0123456 s:0 t:0123456 u:123456 ui:123456 uk:0123456 un:123456 "
    "ung:123456 ut:123456 w:0 yu:123456 yun:123456 yut:123456 z:0"
)


def _yue_phones() -> set[str]:
    out: set[str] = set()
    for item in _YUE_COMPACT.split():
        part, tones = item.split(":")
        for t in tones:
            out.add("Y" + part + ("" if t == "0" else t))
    return out


def _build_v1_symbols() -> list[str]:
    zh_finals_toned = [f + str(t) for t in range(1, 6) for f in ZH_FINALS]
    base = (
        [PAD]
        + list(ZH_INITIALS)
        + zh_finals_toned
        + list(JA_PHONES)
        + list(PUNCTUATION)
        + list(SPECIAL_PHONES)
        + list(ARPABET)
    )
    # Duplicates across groups (e.g. "N", "ch", "sh") collapse here, as in the official table.
    return sorted(set(base))


def _build_symbols() -> list[str]:
    table = _build_v1_symbols()
    table += list(JA_PITCH_MARKS)
    table += sorted(KO_PHONES)
    table += sorted(_yue_phones())
    return table


SYMBOLS: tuple[str, ...] = tuple(_build_symbols())
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
SYMBOLS_V1: tuple[str, ...] = tuple(_build_v1_symbols())
NUM_SYMBOLS_V1 = 322  # the sorted base set alone is the v1 table
assert len(SYMBOLS) == 732, len(SYMBOLS)
assert len(SYMBOLS_V1) == NUM_SYMBOLS_V1 and SYMBOLS[:NUM_SYMBOLS_V1] == SYMBOLS_V1


def symbols_for(generation: str) -> tuple[str, ...]:
    """The phone table of a model generation: the v1 table for ``v1``, else the v2 table."""
    return SYMBOLS_V1 if generation == "v1" else SYMBOLS


def phone_ids_for(ids: Iterable[int], generation: str) -> list[int]:
    """v2 phone ids -> the ids a model of ``generation`` reads. A v1 id is the v2 id of the same
    phone; v2-only phones become ``UNK`` as the official v1 cleaner does (that is what happens to
    the Japanese pitch marks ``[`` ``]``), except Korean and Cantonese ones: v1 has no such
    languages, so those are refused with ``ValueError`` rather than read as a run of UNKs."""
    ids = list(ids)
    if generation != "v1":
        return ids
    pitch = {SYMBOL_TO_ID[m] for m in JA_PITCH_MARKS}
    beyond = sorted({SYMBOLS[i] for i in ids if i >= NUM_SYMBOLS_V1 and i not in pitch})
    if beyond:
        raise ValueError(f"phones {', '.join(beyond)} have no v1 symbol (v1 models read zh, en and ja only)")
    unk = SYMBOL_TO_ID["UNK"]
    return [unk if i in pitch else i for i in ids]


def cleaned_text_to_sequence(phones: Iterable[str]) -> list[int]:
    """Phone strings -> v2 ids (official ``cleaned_text_to_sequence``; unknown phone -> KeyError)."""
    return [SYMBOL_TO_ID[p] for p in phones]


def to_known_phones(phones: Iterable[str]) -> list[str]:
    """Replace phones outside the v2 table with ``UNK`` (what the official cleaner does)."""
    return [p if p in SYMBOL_TO_ID else "UNK" for p in phones]
