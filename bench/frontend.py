"""Text frontend throughput: segments per second for zh / en / ja / mixed phonemisation, and
phone-level BERT features on a tiny random BERT (real model timings need the real weights).

Run from the repository root: PYTHONPATH=. python bench/frontend.py  (single thread; first call per language is reported apart,
since it loads jieba / CMUdict / OpenJTalk).
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from workers.gpt.text import text_to_phones  # noqa: E402
from workers.gpt.text.bert import BertFeatureExtractor, write_tiny_bert  # noqa: E402

SAMPLES = {
    "zh": "今天天气很好，我们一起去公园散步吧。温度是25℃，湿度60%。",
    "en": "The quick brown fox jumps over the lazy dog, and it costs $5.",
    "ja": "今日はいい天気ですね。一緒に公園を散歩しましょう。",
    "auto": "我喜欢Python和machine learning，也喜欢日本語の勉強です。",
}


def main(repeats: int = 20) -> None:
    torch.set_num_threads(1)
    for lang, text in SAMPLES.items():
        t0 = time.perf_counter()
        result = text_to_phones(text, lang)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(repeats):
            text_to_phones(text, lang)
        per = (time.perf_counter() - t0) / repeats
        print(f"{lang:5s} first call {first * 1e3:7.1f} ms, then {per * 1e3:6.2f} ms/segment "
              f"({len(text)} chars, {len(result.phone_ids)} phones)")
    with tempfile.TemporaryDirectory() as tmp:
        bert = BertFeatureExtractor.load(write_tiny_bert(tmp), "cpu")
        result = text_to_phones(SAMPLES["zh"], "zh")
        bert.features_for(result)
        t0 = time.perf_counter()
        for _ in range(repeats):
            feats = bert.features_for(result)
        per = (time.perf_counter() - t0) / repeats
        print(f"tiny BERT (3 layers, width 1024): {per * 1e3:.2f} ms/segment -> {tuple(feats.shape)}")


if __name__ == "__main__":
    main()
