"""One example per reading rule (``workers.gpt.text.reading``), in en, zh and ja: the text, its
spoken form after the rules, and what the normaliser then makes of it (what the G2P reads).
The normalisers' own rules are tested one by one in test_text_frontend.py."""

from __future__ import annotations

import pytest

from workers.gpt.text.frontend import normalize_text
from workers.gpt.text.reading import Replacement, overlay, read_aloud, readings, spoken
from workers.gpt.text.segment import Span

# (language, rule, text, spoken form, normalised)
RULES: list[tuple[str, str, str, str, str]] = [
    ('en', 'url', 'See https://ex.am/ple now', 'See ex dot am slash ple now', 'See ex dot am slash ple now'),
    ('en', 'url_www', 'Go to www.ex.am now', 'Go to www dot ex dot am now', 'Go to www dot ex dot am now'),
    ('en', 'email', 'Write to a.b@example.com now', 'Write to a dot b at example dot com now', 'Write to a dot b at example dot com now'),
    ('en', 'version', 'Run 2.1.3 now', 'Run 2 point 1 point 3 now', 'Run two point one point three now'),
    ('en', 'version_v', 'Run v2.1 now', 'Run version 2 point 1 now', 'Run version two point one now'),
    ('en', 'clock_ampm', 'Meet at 9:05 p.m. today', 'Meet at nine oh five P M today', 'Meet at nine oh five P M today'),
    ('en', 'clock_hour_ampm', 'Meet at 7 a.m. today', 'Meet at seven A M today', 'Meet at seven A M today'),
    ('en', 'date_month_day', 'Due Feb. 21 or March 2nd', 'Due February twenty-first or March second', 'Due February twenty-first or March second'),
    ('en', 'dotted_eg_ie', 'Fruit, e.g. figs, i.e. food', 'Fruit, for example figs, that is food', 'Fruit, for example figs, that is food'),
    ('en', 'currency_scale', 'It cost $3 billion', 'It cost 3 billion dollars', 'It cost three billion dollars'),
    ('en', 'euros', 'It cost €1.05', 'It cost 1 euro and 5 cents', 'It cost one euro and five cents'),
    ('en', 'yen', 'It cost ¥1,500', 'It cost 1,500 yen', 'It cost fifteen hundred yen'),
    ('en', 'units_after_space', 'It is 1 kg and 3 GB', 'It is 1 kilogram and 3 gigabytes', 'It is one kilogram and three gigabytes'),
    ('en', 'abbreviation_title', 'Dr. Who met Mrs. Hu', 'Doctor Who met Missus Hu', 'Doctor Who met Missus Hu'),
    ('en', 'abbreviation_saint_street', 'St. Ives is on Elm St. here', 'Saint Ives is on Elm Street here', 'Saint Ives is on Elm Street here'),
    ('en', 'abbreviation_number', 'No. 5, no. 6 and No more', 'Number 5, number 6 and No more', 'Number five, number six and No more'),
    ('en', 'dotted_capitals', 'The U.K. team', 'The U K team', 'The U K team'),
    ('en', 'initials', 'By J. K. Rowling', 'By J K Rowling', 'By J K Rowling'),
    ('en', 'ampersand', 'Salt & pepper', 'Salt and pepper', 'Salt and pepper'),
    ('en', 'letters_digits', 'Play MP3 files', 'Play MP 3 files', 'Play M P three files'),
    ('en', 'quoting_apostrophe', "He said 'no' and didn't", "He said no and didn't", "He said no and didn't"),
    ('en', 'sentence_final_abbreviation', 'Apples, pears, etc.', 'Apples, pears, et cetera.', 'Apples, pears, et cetera.'),
    ('zh', 'url', '访问https://ex.am/ple吧', '访问ex点am斜杠ple吧', '访问ex点am斜杠ple吧'),
    ('zh', 'email', '发到a.b@ex.am吧', '发到a点b艾特ex点am吧', '发到a点b艾特ex点am吧'),
    ('zh', 'version', '升级到v3.10.2吧', '升级到3点10点2吧', '升级到三点十点二吧'),
    ('zh', 'currency', '花了$1,200.5和€3', '花了1200.5美元和3欧元', '花了一千二百点五美元和三欧元'),
    ('zh', 'thousands', '共12,345人', '共12345人', '共一万二千三百四十五人'),
    ('zh', 'units', '跑了5km，重3.5 kg', '跑了5千米，重3.5千克', '跑了五千米,重三点五千克'),
    ('ja', 'url', 'https://ex.am/pleへ', 'exドットamスラッシュpleへ', 'exドットamスラッシュpleへ'),
    ('ja', 'email', 'a.b@ex.amまで', 'aドットbアットマークexドットamまで', 'aドットbアットマークexドットamまで'),
    ('ja', 'version', '2.1.3を公開', '2点1点3を公開', '2点1点3を公開'),
    ('ja', 'money', '$3.05と€2', '3ドル5セントと2ユーロ', '3ドル5セントと2ユーロ'),
    ('ja', 'clock', '9:05と10:30と11:00', '9時5分と10時半と11時', '9時5分と10時半と11時'),
    ('ja', 'percent', '12.5%と7％', '12点5パーセントと7パーセント', '12点5パーセントと7パーセント'),
    ('ja', 'units', '5kgと2.5 km', '5キログラムと2点5キロメートル', '5キログラムと2点5キロメートル'),
    ('ja', 'decimal_thousands', '3.14と12,000', '3点14と12000', '3点14と12000'),
]


@pytest.mark.parametrize(("language", "rule", "text", "read", "normalised"), RULES, ids=[f"{r[0]}-{r[1]}" for r in RULES])
def test_rule(language: str, rule: str, text: str, read: str, normalised: str) -> None:
    assert read_aloud(text, language) == read
    assert normalize_text(read, language) == normalised


def test_every_rule_has_an_example() -> None:
    from workers.gpt.text import reading

    counts = {lang: len(rules) for lang, rules in reading._RULES.items()}
    examples = {lang: sum(1 for r in RULES if r[0] == lang) for lang in counts}
    assert all(examples[lang] >= counts[lang] for lang in counts), (examples, counts)


def test_a_rule_sees_the_whole_sentence() -> None:
    # "Jan. 5" across what a naive splitter would cut: one replacement, never split.
    text = "It opened Jan. 5. It closed."
    found = readings(text, "en")
    assert [(text[r.start : r.end], r.spoken) for r in found] == [("Jan. 5", "January fifth")]
    assert spoken(text, Span(0, 17), found) == "It opened January fifth."


def test_lexicon_wins_over_rules_and_straddling_replacements_are_not_applied() -> None:
    text = "Dr. No arrives."
    merged = overlay([Replacement(0, 6, "Doctor Know")], readings(text, "en"))
    assert spoken(text, Span(0, len(text)), merged) == "Doctor Know arrives."
    assert spoken(text, Span(4, len(text)), merged) == "No arrives."
