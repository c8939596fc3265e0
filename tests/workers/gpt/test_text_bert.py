"""Phone-level BERT features on a tiny random BERT written by ``write_tiny_bert``."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import BertModel  # noqa: E402

from workers.gpt.text import text_to_phones  # noqa: E402
from workers.gpt.text.bert import FEATURE_DIM, BertFeatureExtractor, write_tiny_bert  # noqa: E402


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted during a BERT test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def bert(bert_dir: Path) -> BertFeatureExtractor:
    return BertFeatureExtractor.load(bert_dir, "cpu")


def test_loaded_model_is_ready(bert: BertFeatureExtractor) -> None:
    assert not bert.model.training
    assert bert.model.config.hidden_size == FEATURE_DIM
    assert bert.model.config.num_hidden_layers == 3


def test_features_repeat_each_character_row_word2ph_times(bert: BertFeatureExtractor) -> None:
    result = text_to_phones("你好，世界！", "zh")
    (chunk,) = result.chunks
    assert chunk.word2ph == [2, 2, 1, 2, 2, 1]
    feats = bert.features_for(result)
    assert feats.shape == (1024, 10)
    assert feats.dtype == torch.float32
    # columns of one character are identical, neighbouring characters differ
    assert torch.equal(feats[:, 0], feats[:, 1])
    assert torch.equal(feats[:, 2], feats[:, 3])
    assert not torch.allclose(feats[:, 1], feats[:, 2])
    assert torch.equal(feats[:, 9], bert.char_features(chunk.norm_text)[5])


def test_feature_is_third_to_last_hidden_state_without_cls_sep(bert: BertFeatureExtractor) -> None:
    text = "今天天气很好."
    inputs = bert.tokenizer(text, return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        states = bert.model(**inputs, output_hidden_states=True).hidden_states
    assert len(states) == 4  # embeddings + 3 layers
    want = states[1][0, 1:-1]  # [-3] of 4 == index 1
    got = bert.char_features(text)
    assert got.shape == (len(text), 1024)
    assert torch.equal(got, want)
    # CLS/SEP really are dropped: the first row is the first character, not [CLS]
    assert not torch.allclose(got[0], states[1][0, 0])


def test_bare_bert_model_gives_identical_hidden_states(bert_dir: Path, bert: BertFeatureExtractor) -> None:
    bare = BertModel.from_pretrained(str(bert_dir), local_files_only=True).eval()
    inputs = bert.tokenizer("世界你好", return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        a = bare(**inputs, output_hidden_states=True).hidden_states[-3]
        b = bert.model(**inputs, output_hidden_states=True).hidden_states[-3]
    assert torch.equal(a, b)


def test_non_chinese_chunks_get_zeros(bert: BertFeatureExtractor) -> None:
    result = text_to_phones("我喜欢Python和机器学习。", "zh")
    langs = [c.language for c in result.chunks]
    assert langs == ["zh", "en", "zh"]
    feats = bert.features_for(result)
    assert feats.shape == (1024, len(result.phone_ids))
    n_zh1 = len(result.chunks[0].phone_ids)
    n_en = len(result.chunks[1].phone_ids)
    assert torch.count_nonzero(feats[:, n_zh1: n_zh1 + n_en]) == 0
    assert torch.count_nonzero(feats[:, :n_zh1]) > 0
    assert torch.count_nonzero(feats[:, n_zh1 + n_en:]) > 0


def test_english_only_is_all_zeros(bert: BertFeatureExtractor) -> None:
    result = text_to_phones("Hello world.", "en")
    feats = bert.features_for(result)
    assert feats.shape == (1024, len(result.phone_ids))
    assert torch.count_nonzero(feats) == 0


def test_mismatched_word2ph_is_rejected(bert: BertFeatureExtractor) -> None:
    with pytest.raises(ValueError):
        bert.phone_features("你好", [2])


def test_load_refuses_a_bert_of_the_wrong_width(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    path = write_tiny_bert(tmp_path / "ok", chars="你好")
    cfg = BertConfig.from_pretrained(str(path))
    cfg.hidden_size, cfg.intermediate_size = 64, 32
    BertForMaskedLM(cfg).save_pretrained(str(tmp_path / "narrow"))
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "narrow" / name).write_bytes((path / name).read_bytes())
    with pytest.raises(ValueError):
        BertFeatureExtractor.load(tmp_path / "narrow")
