"""Hard sentences in en, zh and ja: the segments each text is cut into (sentence boundaries:
abbreviations, decimals, initials, closing quotes and brackets, 。！？) and what each segment is
read as after the reading rules and the normaliser (what the G2P sees). Segments are compared
as written: they must be exact slices of the source."""

from __future__ import annotations

import re

import pytest

from workers.gpt.planning import plan_pieces
from workers.gpt.text.frontend import normalize_text
from workers.gpt.text.reading import readings, spoken
from workers.gpt.text.segment import sentence_spans

# (language, text, [(segment as written, segment as read)])
TABLE: list[tuple[str, str, list[tuple[str, str]]]] = [
    ('en', 'The price rose 3.5% to $12.40 on Jan. 5.', [('The price rose 3.5% to $12.40 on Jan. 5.', 'The price rose three point five percent to twelve dollars and forty cents on January fifth.')]),
    ('en', 'Dr. J. R. R. Tolkien wrote it.', [('Dr. J. R. R. Tolkien wrote it.', 'Doctor J R R Tolkien wrote it.')]),
    ('en', '"Stop." She left.', [('"Stop."', 'Stop.'), ('She left.', 'She left.')]),
    ('en', 'Version 2.1.3 ships at 10:30 a.m.', [('Version 2.1.3 ships at 10:30 a.m.', 'Version two point one point three ships at ten thirty A M.')]),
    ('en', 'Email a.b@example.com or visit https://ex.am/ple.', [('Email a.b@example.com or visit https://ex.am/ple.', 'Email a dot b at example dot com or visit ex dot am slash ple.')]),
    ('en', 'Mr. Smith paid $1.2 million, i.e. too much.', [('Mr. Smith paid $1.2 million, i.e. too much.', 'Mister Smith paid one point two million dollars, that is too much.')]),
    ('en', 'The U.S. Army arrived at 5 p.m. on Mar. 3rd.', [('The U.S. Army arrived at 5 p.m. on Mar. 3rd.', 'The U S Army arrived at five P M on March third.')]),
    ('en', 'It weighs approx. 5 kg vs. 3 kg for the old one.', [('It weighs approx. 5 kg vs. 3 kg for the old one.', 'It weighs approximately five kilograms versus three kilograms for the old one.')]),
    ('en', "Pi is 3.14159. That's all.", [('Pi is 3.14159.', 'Pi is three point one four one five nine.'), ("That's all.", "That's all.")]),
    ('en', "He said, 'Go home.' Then he left.", [("He said, 'Go home.'", 'He said, Go home.'), ('Then he left.', 'Then he left.')]),
    ('en', 'Main St. is 2 km away. St. Louis is not.', [('Main St. is 2 km away.', 'Main Street is two kilometers away.'), ('St. Louis is not.', 'Saint Louis is not.')]),
    ('en', 'We met on Jan 5, 2024 at 9:05 p.m. sharp.', [('We met on Jan 5, 2024 at 9:05 p.m. sharp.', 'We met on January fifth, twenty twenty-four at nine oh five P M sharp.')]),
    ('en', 'Prices fell 0.5% in Q3, e.g. bread cost €3.50.', [('Prices fell 0.5% in Q3, e.g. bread cost €3.50.', 'Prices fell zero point five percent in Q three, for example bread cost three euros and fifty cents.')]),
    ('en', 'Call me at 10:00 a.m. or later.', [('Call me at 10:00 a.m. or later.', 'Call me at ten A M or later.')]),
    ('en', 'The file is 2.5 GB, not 3 MB.', [('The file is 2.5 GB, not 3 MB.', 'The file is two point five gigabytes, not three megabytes.')]),
    ('en', 'Wait... what? No!', [('Wait... what?', 'Wait. what?'), ('No!', 'No!')]),
    ('en', 'Read fig. 3 and p. 12, etc. Then stop.', [('Read fig. 3 and p. 12, etc.', 'Read figure three and page twelve, et cetera.'), ('Then stop.', 'Then stop.')]),
    ('en', 'She owns No. 7 & No. 9.', [('She owns No. 7 & No. 9.', 'She owns Number seven and Number nine.')]),
    ('en', 'It was 1,000,000 people in 1984.', [('It was 1,000,000 people in 1984.', 'It was one million people in nineteen eighty-four.')]),
    ('en', 'Visit www.example.org today!', [('Visit www.example.org today!', 'Visit www dot example dot org today!')]),
    ('en', 'Item 4 costs £2.50.', [('Item 4 costs £2.50.', 'Item four costs two pounds and fifty pence.')]),
    ('en', '(This is a note.) Next sentence here.', [('(This is a note.)', 'This is a note.'), ('Next sentence here.', 'Next sentence here.')]),
    ('en', 'Prof. Lee arrived Sept. 14.', [('Prof. Lee arrived Sept. 14.', 'Professor Lee arrived September fourteenth.')]),
    ('en', 'The v2.1 release is out.', [('The v2.1 release is out.', 'The version two point one release is out.')]),
    ('zh', '它涨了3.5%。', [('它涨了3.5%。', '它涨了百分之三点五.')]),
    ('zh', '他说：“我走了。”然后离开了。', [('他说：“我走了。”', '他说,我走了.'), ('然后离开了。', '然后离开了.')]),
    ('zh', '版本2.1.3已发布。', [('版本2.1.3已发布。', '版本二点一点三已发布.')]),
    ('zh', '价格是$12.40，约合1,000.5元。', [('价格是$12.40，约合1,000.5元。', '价格是十二点四美元,约合一千点五元.')]),
    ('zh', '会议在10:30开始！你来吗？', [('会议在10:30开始！', '会议在十点半开始!'), ('你来吗？', '你来吗?')]),
    ('zh', '请访问https://ex.am/ple。', [('请访问https://ex.am/ple。', '请访问ex点am斜杠ple.')]),
    ('zh', '邮箱是a.b@example.com。', [('邮箱是a.b@example.com。', '邮箱是a点b艾特example点com.')]),
    ('zh', '“你好！”他说。《书名》很好。', [('“你好！”', '你好!'), ('他说。', '他说.'), ('《书名》很好。', '书名很好.')]),
    ('zh', '今天是2024年1月5日。', [('今天是2024年1月5日。', '今天是二零二四年一月五日.')]),
    ('zh', '温度是-3.5℃。', [('温度是-3.5℃。', '温度是零下三点五度.')]),
    ('zh', '他跑了3.5km。', [('他跑了3.5km。', '他跑了三点五千米.')]),
    ('zh', '第一句……第二句。', [('第一句……第二句。', '第一句…第二句.')]),
    ('zh', '他买了3个苹果，花了12.5元。', [('他买了3个苹果，花了12.5元。', '他买了三个苹果,花了十二点五元.')]),
    ('zh', '（注：这是例子。）下一句。', [('（注：这是例子。）', '注,这是例子.'), ('下一句。', '下一句.')]),
    ('ja', '「行くよ。」と彼は言った。', [('「行くよ。」と彼は言った。', '「行くよ。」と彼は言った。')]),
    ('ja', '今日は晴れ。明日は雨！本当？', [('今日は晴れ。', '今日は晴れ。'), ('明日は雨！', '明日は雨！'), ('本当？', '本当？')]),
    ('ja', '3.5%上がった。', [('3.5%上がった。', '3点5パーセント上がった。')]),
    ('ja', '会議は10:30からです。', [('会議は10:30からです。', '会議は10時半からです。')]),
    ('ja', '価格は1,000円です。', [('価格は1,000円です。', '価格は1000円です。')]),
    ('ja', '『終わり。』次の章へ。', [('『終わり。』', '『終わり。』'), ('次の章へ。', '次の章へ。')]),
    ('ja', '$12.40でした。', [('$12.40でした。', '12ドル40セントでした。')]),
    ('ja', 'バージョン2.1.3を公開。', [('バージョン2.1.3を公開。', 'バージョン2点1点3を公開。')]),
    ('ja', '詳しくはhttps://ex.am/pleへ。', [('詳しくはhttps://ex.am/pleへ。', '詳しくはexドットamスラッシュpleへ。')]),
    ('ja', '「本当？」って聞いた。', [('「本当？」って聞いた。', '「本当？」って聞いた。')]),
    ('en', 'I have 3. You have 4.', [('I have 3.', 'I have three.'), ('You have 4.', 'You have four.')]),
    ('en', '1. Mix the flour.\n2. Add water.', [('1. Mix the flour.', 'first, Mix the flour.'), ('2. Add water.', 'second, Add water.')]),
    ('zh', '我有3个。你有4.5个。', [('我有3个。', '我有三个.'), ('你有4.5个。', '你有四点五个.')]),
    ('ja', '彼は3.5kgです。', [('彼は3.5kgです。', '彼は3点5キログラムです。')]),
]


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _read(text: str, language: str) -> list[tuple[str, str]]:
    replacements = readings(text, language)
    spans = sentence_spans(text, language, keep=[r.span for r in replacements])
    return [(s.text(text), normalize_text(spoken(text, s, replacements), language)) for s in spans]


def test_the_table_is_big_enough() -> None:
    assert len(TABLE) >= 40
    assert {lang for lang, _, _ in TABLE} == {"en", "zh", "ja"}


@pytest.mark.parametrize(("language", "text", "expected"), TABLE, ids=[t for _, t, _ in TABLE])
def test_hard_sentence(language: str, text: str, expected: list[tuple[str, str]]) -> None:
    assert _read(text, language) == expected
    # The planner packs those sentences into segments (a newline ends one) and reads the packed
    # segments the same way: the normaliser sees whole sentences either way.
    pieces = plan_pieces(text, "sentences", language, 300)
    assert [p.written for p in pieces] == [p for p in re.split(r"\s*\n\s*", text) if p]
    assert _squeeze("".join(normalize_text(p.spoken, language) for p in pieces)) == _squeeze(
        "".join(r for _, r in expected)
    )
