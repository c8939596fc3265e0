"""Text frontend: symbol table, normalisation, split methods, language split and G2P.

Expected phone sequences below were written by hand from pinyin (with the official tone
sandhi rules), CMUdict entries and kana/accent readings, then compared with the code; they
are not recorded outputs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workers.gpt.text import (  # noqa: E402
    SYMBOLS,
    LangChunk,
    SplitMethod,
    clean_chunk,
    cleaned_text_to_sequence,
    cut_text,
    split_languages,
    split_text,
    text_to_phones,
)
from workers.gpt.text.en_g2p import (  # noqa: E402
    G2PEN_PHONEMES,
    GruG2P,
    find_g2p_en_checkpoint,
    lookup_word,
)
from workers.gpt.text.en_norm import normalize_en  # noqa: E402
from workers.gpt.text.zh_g2p import syllable_to_phones  # noqa: E402
from workers.gpt.text.zh_norm import normalize_zh, read_cardinal, read_number  # noqa: E402


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted during a text frontend test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# pyopenjtalk and Debian's naist-jdic are installed by `infra/bootstrap.sh`; missing, these fail.
needs_ja = pytest.mark.requires_tools


# ----------------------------------------------------------------------------- symbols
def test_symbol_table_size_and_hand_checked_positions() -> None:
    assert len(SYMBOLS) == 732
    assert len(set(SYMBOLS)) == 732
    # ASCII punctuation sorts first, then the 90 upper-case symbols (3 zh glottal initials,
    # 10 E/En finals, I N U, SP SP2 SP3 UNK, 70 ARPAbet after the shared "N"), then "_".
    expected = {
        "!": 0, ",": 1, "-": 2, ".": 3, "?": 4, "AA": 5, "AA0": 6, "ZH": 94, "_": 95,
        "a": 96, "a1": 97, "a5": 101, "ai1": 102,
        "…": 321,  # last of the sorted v1 base (U+2026 sorts after ASCII)
        "[": 322, "]": 323,  # Japanese pitch marks appended
        "ㄱ": 324, "停": 351, "空": 352,  # sorted Korean block
        "Ya": 353, "Yz": 731,  # sorted Cantonese block
    }
    for sym, idx in expected.items():
        assert SYMBOLS[idx] == sym, (sym, idx, SYMBOLS[idx])
    assert list(SYMBOLS[:322]) == sorted(SYMBOLS[:322])
    assert cleaned_text_to_sequence(["_", "!", "a1", "Yz"]) == [95, 0, 97, 731]
    with pytest.raises(KeyError):
        cleaned_text_to_sequence(["not-a-phone"])


def test_pinyin_syllables_map_like_the_official_table() -> None:
    # (strict pypinyin initial, final) -> (initial phone, final phone), hand-checked rows of
    # the official opencpop-strict table.
    cases = {
        ("zh", "i"): ("zh", "ir"), ("r", "i"): ("r", "ir"), ("c", "i"): ("c", "i0"),
        ("g", "uei"): ("g", "ui"), ("n", "iou"): ("n", "iu"), ("d", "uen"): ("d", "un"),
        ("j", "v"): ("j", "v"), ("l", "ve"): ("l", "ve"), ("", "ian"): ("y", "En"),
        ("", "ie"): ("y", "E"), ("", "iou"): ("y", "ou"), ("", "uei"): ("w", "ei"),
        ("", "van"): ("y", "van"), ("", "an"): ("AA", "an"), ("", "er"): ("EE", "er"),
        ("", "ou"): ("OO", "ou"), ("", "i"): ("y", "i"), ("", "u"): ("w", "u"),
    }
    for (ini, fin), want in cases.items():
        assert syllable_to_phones(ini, fin) == want, (ini, fin)


# ----------------------------------------------------------------------------- hand-checked G2P
ZH_CASES = [
    # 3-3 sandhi in a two-syllable word: ni3 hao3 -> ni2 hao3
    ("你好", "n i2 h ao3"),
    # 们 neutral after a pronoun; 朋友 is on the neutral-tone word list
    ("我们是朋友。", "w o3 m en5 sh ir4 p eng2 y ou5 ."),
    # 老虎+很 merged (all third tones, 3 chars), split 老虎/很 -> lao2 hu2 hen3
    ("老虎很凶猛", "l ao2 h u2 h en3 x iong1 m eng3"),
    # 不 before a fourth tone -> bu2; 着急 zhao2 ji2
    ("不要着急。", "b u2 y ao4 zh ao2 j i2 ."),
    # 一 before 个 (ge4) -> yi2; 个 after a numeral -> neutral
    ("这是一个苹果。", "zh e4 sh ir4 y i2 g e5 p ing2 g uo3 ."),
    # 去 qu4 -> q + v4; 了 after a verb is neutral
    ("他去北京了。", "t a1 q v4 b ei3 j ing1 l e5 ."),
    # 很好: 3-3 -> hen2 hao3
    ("今天天气很好。", "j in1 t ian1 t ian1 q i4 h en2 h ao3 ."),
    # "2" + quantifier -> 二; 我有 3-3 -> wo2; 二 is a zero-initial er -> EE er4
    ("我有2个苹果", "w o2 y ou3 EE er4 g e5 p ing2 g uo3"),
    # decimal -> 三点一四; 一 in a digit string keeps yi1; 率 lv4; 四 si4 -> s i04
    ("圆周率是3.14。", "y van2 zh ou1 l v4 sh ir4 s an1 d ian3 y i1 s i04 ."),
    # years are read digit by digit
    ("2024年", "EE er4 l ing2 EE er4 s i04 n ian2"),
    # 困难 is on the neutral-tone list
    ("不怕困难！", "b u2 p a4 k un4 n an5 !"),
    # 一样: 一 before a fourth tone -> yi2
    ("一样好", "y i2 y ang4 h ao3"),
    # 你们 ni3 men5, 吗 neutral, ？ -> ?
    ("你们好吗？", "n i3 m en5 h ao3 m a5 ?"),
    # 5:30 -> 五点半; 五点 3-3 -> wu2 dian3
    ("5:30", "w u2 d ian3 b an4"),
]

EN_CASES = [
    ("Hello world.", "HH AH0 L OW1 W ER1 L D ."),
    ("I love you.", "AY1 L AH1 V Y UW1 ."),
    ("The cat sat on the mat.", "DH AH0 K AE1 T S AE1 T AA1 N DH AH0 M AE1 T ."),
    ("Good morning!", "G UH1 D M AO1 R N IH0 NG !"),
    # $5 -> five dollars
    ("It costs $5.", "IH1 T K AA1 S T S F AY1 V D AA1 L ER0 Z ."),
    ("I have 3 apples.", "AY1 HH AE1 V TH R IY1 AE1 P AH0 L Z ."),
    # capitals split -> G P T, read as letters
    ("GPT is great.", "JH IY1 P IY1 T IY1 IH1 Z G R EY1 T ."),
    # homograph after "to": present tense
    ("I want to read.", "AY1 W AA1 N T T UW1 R IY1 D ."),
    # homograph elsewhere: past tense
    ("She read it.", "SH IY1 R EH1 D IH1 T ."),
    # fewer than 4 phones -> a leading comma (official)
    ("OK", ", OW1 K EY1"),
    ("Thank you, my friend.", "TH AE1 NG K Y UW1 , M AY1 F R EH1 N D ."),
    ("Text to speech", "T EH1 K S T T UW1 S P IY1 CH"),
]

JA_CASES = [
    # heiban words: rise after the first mora, no fall
    ("こんにちは", "k o [ N n i ch i w a"),  # the example in the official prosody docstring
    ("飴", "a [ m e"),
    ("桜", "s a [ k u r a"),
    ("東京", "t o [ o ky o o"),
    ("学校", "g a [ cl k o o"),  # sokuon -> cl
    # accent on the first mora: fall after it
    ("雨", "a ] m e"),
    ("猫", "n e ] k o"),
    # accent on the second mora
    ("犬", "i [ n u"),
    ("あなた", "a [ n a ] t a"),
    ("日本語", "n i [ h o N g o"),  # heiban, moraic N
    ("ありがとう", "a [ r i ] g a t o o"),
    # punctuation maps to the v2 set and stays in place
    ("猫。", "n e ] k o ."),
    ("はい、猫！", "h a ] i , n e ] k o !"),
]


@pytest.mark.parametrize(("text", "phones"), ZH_CASES)
def test_zh_g2p_hand_checked(text: str, phones: str) -> None:
    chunk = clean_chunk(text, "zh")
    assert chunk.phones == phones.split()
    assert chunk.word2ph is not None
    assert len(chunk.word2ph) == len(chunk.norm_text)
    assert sum(chunk.word2ph) == len(chunk.phones)
    assert chunk.phone_ids == cleaned_text_to_sequence(chunk.phones)


@pytest.mark.parametrize(("text", "phones"), EN_CASES)
def test_en_g2p_hand_checked(text: str, phones: str) -> None:
    chunk = clean_chunk(text, "en")
    assert chunk.phones == phones.split()
    assert chunk.word2ph is None


@needs_ja
@pytest.mark.parametrize(("text", "phones"), JA_CASES)
def test_ja_g2p_hand_checked(text: str, phones: str) -> None:
    chunk = clean_chunk(text, "ja")
    assert chunk.phones == phones.split()
    assert chunk.word2ph is None


@needs_ja
def test_ja_accent_phrase_boundary_becomes_unk_and_pause_is_pad() -> None:
    # "#" (accent phrase border) is not in the v2 table -> UNK; a pause "_" is id 0.
    phones = clean_chunk("今日はいい天気", "ja").phones
    assert "UNK" in phones
    assert "#" not in phones


def test_word2ph_counts_punctuation_as_one_phone() -> None:
    chunk = clean_chunk("你好，世界！", "zh")
    assert chunk.norm_text == "你好,世界!"
    assert chunk.word2ph == [2, 2, 1, 2, 2, 1]


def test_zh_silence_marks() -> None:
    # official: ￥ in Chinese text is a longer pause (SP2)
    assert clean_chunk("你好￥世界", "zh").phones == "n i2 h ao3 SP2 sh ir4 j ie4".split()


def test_short_input_gets_leading_period() -> None:
    # fewer than 6 phones -> redone as "." + text (official guard)
    result = text_to_phones("你好", "zh")
    assert result.phones == ". n i2 h ao3".split()
    assert result.norm_text == ".你好" or result.norm_text.endswith("你好")


def test_text_to_phones_mixed_zh_en() -> None:
    result = text_to_phones("我喜欢Python和machine learning。", "zh")
    assert [c.language for c in result.chunks] == ["zh", "en", "zh", "en"]
    # 我喜欢: 我+喜 3-3 -> wo2; Python P AY1 TH AA0 N; 和 he2
    assert result.phones == (
        "w o2 x i3 h uan5 P AY1 TH AA0 N h e2 M AH0 SH IY1 N L ER1 N IH0 NG .".split()
    )
    assert result.phone_ids == cleaned_text_to_sequence(result.phones)
    assert result.word2ph == [2, 2, 2, 2]  # zh chunks only
    assert result.norm_text == "我喜欢Python和machine learning."


def test_english_oov_path_does_not_import_g2p_en_or_nltk() -> None:
    # g2p_en's import runs nltk.download; we only read its checkpoint file. Fresh process so
    # other tests' imports cannot interfere.
    code = (
        "import sys\n"
        "from workers.gpt.text import clean_chunk\n"
        "clean_chunk('Zorbly flinx.', 'en')\n"  # OOV words exercise the predictor path
        "assert 'g2p_en' not in sys.modules and 'nltk' not in sys.modules, sorted(sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ----------------------------------------------------------------------------- OOV predictor
def test_gru_predictor_matches_torch_gru() -> None:
    import torch

    torch.manual_seed(0)
    hid, emb, n_g, n_p = 8, 6, 29, len(G2PEN_PHONEMES)
    enc = torch.nn.GRUCell(emb, hid)
    dec = torch.nn.GRUCell(emb, hid)
    enc_emb, dec_emb = torch.randn(n_g, emb), torch.randn(n_p, emb)
    fc = torch.nn.Linear(hid, n_p)
    weights = {
        "enc_emb": enc_emb, "enc_w_ih": enc.weight_ih, "enc_w_hh": enc.weight_hh,
        "enc_b_ih": enc.bias_ih, "enc_b_hh": enc.bias_hh,
        "dec_emb": dec_emb, "dec_w_ih": dec.weight_ih, "dec_w_hh": dec.weight_hh,
        "dec_b_ih": dec.bias_ih, "dec_b_hh": dec.bias_hh, "fc_w": fc.weight, "fc_b": fc.bias,
    }
    model = GruG2P({k: v.detach().numpy() for k, v in weights.items()})
    word = "zebra"
    with torch.no_grad():
        h = torch.zeros(1, hid)
        for ch in word:
            h = enc(enc_emb[3 + ord(ch) - ord("a")][None], h)
        h = enc(enc_emb[2][None], h)  # </s>
        prev, want = 2, []
        for _ in range(20):
            h = dec(dec_emb[prev][None], h)
            prev = int(fc(h).argmax())
            if prev == 3:
                break
            want.append(G2PEN_PHONEMES[prev])
    assert model(word) == want


def test_real_predictor_reproduces_dictionary_words() -> None:
    model = GruG2P.load(find_g2p_en_checkpoint())  # type: ignore[arg-type]
    # The network was trained on CMUdict, so common words mostly come out as in the
    # dictionary (a broken port gives garbage, not near misses).
    words = ("hello water computer table window garden yellow music number family people "
             "little simple mother father money paper letter river happy").split()
    from workers.gpt.text.en_g2p import _cmu

    agree = sum(model(w) == _cmu()[w] for w in words)
    assert agree >= 15, agree
    assert model("water") == ["W", "AO1", "T", "ER0"]
    phones = lookup_word("blicketing")  # not a word: predicted, ends in -ing
    assert phones[-2:] == ["IH0", "NG"]


def test_g2p_en_inventory_is_the_v2_arpabet_with_stressless_uw() -> None:
    assert len(G2PEN_PHONEMES) == 74  # size of the checkpoint's output layer
    assert G2PEN_PHONEMES[:4] == ("<pad>", "<unk>", "<s>", "</s>")
    assert "UW" in G2PEN_PHONEMES and "ER" not in G2PEN_PHONEMES
    path = find_g2p_en_checkpoint()
    if path is not None:
        with np.load(path) as data:
            assert data["fc_w"].shape[0] == len(G2PEN_PHONEMES)
            assert data["enc_emb"].shape[0] == 29


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    ("text", "norm"),
    [
        ("3.14", "三点一四"),
        ("百分之12%", "百分之百分之十二"),
        ("涨了12%", "涨了百分之十二"),
        ("气温-3°C", "气温零下三度"),
        ("2024年5月3日", "二零二四年五月三日"),
        ("2023-05-06", "二零二三年五月六日"),
        ("8:30出发", "八点半出发"),
        ("8:05出发", "八点零五分出发"),
        ("8:30-9:15开会", "八点半至九点十五分开会"),
        ("1/3的人", "三分之一的人"),
        ("重5kg", "重五千克"),
        ("跑了100m", "跑了一百米"),
        ("电话13812345678", "电话幺三八幺二三四五六七八"),
        ("房间10086", "房间幺零零八六"),  # 3+ digits without a measure word: digit by digit
        ("100元", "一百元"),
        ("10元", "十元"),  # no leading 一十
        ("1015元", "一千零一十五元"),
        ("2~5个", "二到五个"),
        ("3+2=5", "三加二等于五"),
        ("0.5和.5", "零点五和零点五"),
        ("他说：“你好！”", "他说,你好!"),
        ("好……吧~", "好…吧…"),
        ("真的吗？？！", "真的吗?"),
        ("嗯", "恩"),
        ("α粒子", "阿尔法粒子"),
        ("ABC很好", "很好"),  # Latin letters are not part of a zh chunk
    ],
)
def test_zh_normalisation(text: str, norm: str) -> None:
    assert normalize_zh(text) == norm


def test_zh_number_reading_rules() -> None:
    assert read_cardinal("12") == "十二"
    assert read_cardinal("100000") == "十万"
    assert read_cardinal("100010") == "十万零一十"
    assert read_cardinal("0") == "零"
    assert read_number("3.20") == "三点二"
    assert read_number("100000000") == "一亿"


def test_zh_traditional_to_simplified() -> None:
    assert normalize_zh("這是繁體字") == "这是繁体字"


@pytest.mark.parametrize(
    ("text", "norm"),
    [
        ("It costs $6.24.", "It costs six dollars and twenty-four cents."),
        ("the 1st and 22nd", "the first and twenty-second"),
        ("3/4 of it", "three fourths of it"),
        ("1/2 cup", "one half cup"),
        ("in 1999", "in nineteen ninety-nine"),
        ("in 2005", "in two thousand five"),
        ("at 13:00", "at one o'clock p.m."),
        ("50% off", "fifty percent off"),
        ("e.g. this", "for example this"),
        ("1,000,000 people", "one million people"),
        ("12.5 apples", "twelve point five apples"),
        ("10km away", "ten kilometers away"),
        ("1km away", "one kilometer away"),
        ("NASA rocks", "N A S A rocks"),
        ("Wait... what", "Wait. what"),
        ("1. Mix it", "first, Mix it"),  # a numbered list item, at the start of a line
        ("I have 3. You have 4.", "I have three. You have four."),  # not an ordinal mid-line
        ("Note: this; that", "Note this that"),  # official drops : and ; (see en_norm)
        ("café", "cafe"),
        ("ＡＢＣ １２", "A B C twelve"),  # full-width ASCII is read, not dropped
    ],
)
def test_en_normalisation(text: str, norm: str) -> None:
    assert normalize_en(text) == norm


# ----------------------------------------------------------------------------- split methods
def test_split_method_names_and_official_aliases() -> None:
    assert SplitMethod.parse("cut0") is SplitMethod.NONE
    assert SplitMethod.parse("cut1") is SplitMethod.EVERY_4_SENTENCES
    assert SplitMethod.parse("cut2") is SplitMethod.ABOUT_50_CHARS
    assert SplitMethod.parse("cut3") is SplitMethod.CHINESE_PERIOD
    assert SplitMethod.parse("cut4") is SplitMethod.ENGLISH_PERIOD
    assert SplitMethod.parse("cut5") is SplitMethod.PUNCTUATION
    assert SplitMethod.parse("punctuation") is SplitMethod.PUNCTUATION
    with pytest.raises(ValueError):
        SplitMethod.parse("cut9")


def test_english_period_keeps_decimals() -> None:
    # Segments are exact slices: the period stays, and a decimal point is never a cut.
    assert cut_text("Pi is 3.14 here. It is famous.", "english_period") == ["Pi is 3.14 here.", "It is famous."]
    assert cut_text("Pi is 3.14. It is famous.", "english_period") == ["Pi is 3.14.", "It is famous."]
    assert cut_text("Dr. Who is 3.5 m tall. Yes.", "english_period") == ["Dr. Who is 3.5 m tall.", "Yes."]


def test_punctuation_keeps_decimals() -> None:
    assert cut_text("价格是3.14元，很便宜。", "punctuation") == ["价格是3.14元，", "很便宜。"]
    assert cut_text("a,b.c", SplitMethod.PUNCTUATION) == ["a,", "b.", "c"]
    assert cut_text("It cost 1,000, or 10:30.", "punctuation") == ["It cost 1,000,", "or 10:30."]


def test_chinese_period() -> None:
    assert cut_text("第一句。第二句。第三句", "chinese_period") == ["第一句。", "第二句。", "第三句"]


def test_every_4_sentences_last_group_takes_the_remainder() -> None:
    nine = "".join(f"{c}。" for c in "一二三四五六七八九")
    assert cut_text(nine, "every_4_sentences") == ["一。二。三。四。", "五。六。七。八。九。"]
    five = "".join(f"{c}。" for c in "一二三四五")
    assert cut_text(five, "every_4_sentences") == [five]
    assert cut_text("一。二。三", "every_4_sentences") == ["一。二。三"]


def test_about_50_chars() -> None:
    s = "这" * 19 + "。"  # 20 characters
    assert cut_text(s * 4, "about_50_chars") == [s * 4]  # 60 + a 20-char tail merged back
    assert cut_text(s * 6, "about_50_chars") == [s * 3, s * 3]


def test_none_and_punctuation_only() -> None:
    assert cut_text("整段不切。第二句。", "none") == ["整段不切。第二句。"]
    # Nothing is dropped: a text of marks only is one segment (the planner has nothing to say).
    assert cut_text("..", "none") == [".."]
    assert split_text("。。", "none") == ["。。"]
    assert cut_text("，。", "punctuation") == ["，。"]
    assert cut_text("Hi. ...", "punctuation") == ["Hi. ..."]  # a stray mark joins its neighbour


def test_split_text_pipeline() -> None:
    # No mark is added, removed or collapsed (the engine closes the spoken form instead).
    assert split_text("你好。今天天气不错", "none") == ["你好。今天天气不错"]
    assert split_text("Hi!!! How are you", "none", language="en") == ["Hi!!! How are you"]
    # pieces shorter than 5 characters are merged forward
    assert split_text("今天天气，很好，我们走吧。", "punctuation") == ["今天天气，", "很好，我们走吧。"]
    # newlines always separate segments
    assert split_text("第一段很长的话。\n第二段很长的话。", "none") == ["第一段很长的话。", "第二段很长的话。"]
    long = ("一二三四五六七八九十" * 30 + "，") * 2
    pieces = split_text(long, "none")
    assert len(pieces) == 2 and all(len(p) <= 510 for p in pieces)
    assert "".join(pieces) == long


# ----------------------------------------------------------------------------- language split
def test_language_split_zh_mode_with_english() -> None:
    assert split_languages("我喜欢Python和machine learning", "zh") == [
        LangChunk("zh", "我喜欢"), LangChunk("en", "Python"), LangChunk("zh", "和"),
        LangChunk("en", "machine learning"),
    ]


def test_language_split_auto() -> None:
    assert split_languages("こんにちは、世界", "auto") == [LangChunk("ja", "こんにちは、世界")]
    assert split_languages("今天天气很好。こんにちは。", "auto") == [
        LangChunk("zh", "今天天气很好。"), LangChunk("ja", "こんにちは。"),
    ]
    assert split_languages("Hello世界", "auto") == [LangChunk("en", "Hello"), LangChunk("zh", "世界")]
    assert split_languages("今天是2024年", "auto") == [LangChunk("zh", "今天是2024年")]


def test_language_split_numbers_join_following_cjk() -> None:
    assert split_languages("Python 3和机器学习", "zh") == [
        LangChunk("en", "Python "), LangChunk("zh", "3和机器学习"),
    ]
    assert split_languages("Version 2 is out", "zh") == [LangChunk("en", "Version 2 is out")]


def test_language_split_other_modes() -> None:
    assert split_languages("Hello  世界", "en") == [LangChunk("en", "Hello 世界")]
    assert split_languages("東京へ行くOK", "ja") == [LangChunk("ja", "東京へ行く"), LangChunk("en", "OK")]
    assert split_languages("   ", "zh") == []
    with pytest.raises(ValueError):
        split_languages("x", "ko")


def test_v1_symbol_table_is_the_sorted_base_set() -> None:
    from workers.gpt.text.symbols import SYMBOLS_V1, phone_ids_for, symbols_for

    assert len(SYMBOLS_V1) == 322 == len(set(SYMBOLS_V1))
    assert list(SYMBOLS_V1) == sorted(SYMBOLS_V1)
    # Positions checked by hand against the official text/symbols.py sorted set.
    for sym, idx in {"!": 0, "AA": 5, "ZH": 94, "_": 95, "a1": 97, "…": 321}.items():
        assert SYMBOLS_V1[idx] == sym
    assert "[" not in SYMBOLS_V1 and "Ya" not in SYMBOLS_V1 and "ㄱ" not in SYMBOLS_V1
    assert symbols_for("v1") is SYMBOLS_V1
    assert symbols_for("v2Pro") is symbols_for("v2ProPlus") is SYMBOLS
    ids = cleaned_text_to_sequence(["a1", "[", "k", "]", "SP"])
    assert phone_ids_for(ids, "v2") == ids
    assert phone_ids_for(ids, "v1") == cleaned_text_to_sequence(["a1", "UNK", "k", "UNK", "SP"])
    with pytest.raises(ValueError, match="Yz"):
        phone_ids_for(cleaned_text_to_sequence(["a1", "Yz"]), "v1")
