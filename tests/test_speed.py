"""The fast paths: cached tokenization (reuse and invalidation), torch.compile as an option, SDPA.

The length-grouped sampler's coverage and padding tests live in test_data.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentiment import data as data_mod
from sentiment import train as train_mod
from sentiment.config import ModelConfig, build_config

TEXTS = [
    "A warm, funny and beautifully acted film.",
    "Two hours of my life I will never get back; the plot is a mess and the acting is wooden. " * 8,
    "Fine.",
    "Gripping from start to finish, with a score that lingers long after the credits.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from sentiment.model import load_tokenizer

    return load_tokenizer(tiny_model)


@pytest.fixture
def counted(monkeypatch):
    """Counts real tokenizations (cache misses) behind encode_cached."""
    calls = []
    real = data_mod.encode

    def encode(texts, tokenizer, max_length, truncation="head"):
        calls.append((max_length, truncation))
        return real(texts, tokenizer, max_length, truncation)

    monkeypatch.setattr(data_mod, "encode", encode)
    return calls


def _same(a: data_mod.Encoded, b: data_mod.Encoded) -> bool:
    return a.input_ids == b.input_ids and np.array_equal(a.full_lengths, b.full_lengths)


def test_cached_encoding_equals_encode_and_is_reused(tokenizer, tmp_path, counted):
    first = data_mod.encode_cached(TEXTS, tokenizer, 32, "head", cache_dir=tmp_path)
    again = data_mod.encode_cached(TEXTS, tokenizer, 32, "head", cache_dir=tmp_path)
    assert len(counted) == 1, "the second call must be read from the cache"
    assert _same(first, again)
    assert _same(again, data_mod.encode(TEXTS, tokenizer, 32, "head"))
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert again.full_lengths[1] > 32 and max(again.lengths) == 32  # truncated, full length kept


def test_cache_is_invalidated_by_max_length_truncation_and_texts(tokenizer, tmp_path, counted):
    data_mod.encode_cached(TEXTS, tokenizer, 32, "head", cache_dir=tmp_path)
    data_mod.encode_cached(TEXTS, tokenizer, 48, "head", cache_dir=tmp_path)
    data_mod.encode_cached(TEXTS, tokenizer, 32, "head_tail", cache_dir=tmp_path)
    data_mod.encode_cached([*TEXTS[:-1], TEXTS[-1] + "!"], tokenizer, 32, "head", cache_dir=tmp_path)
    data_mod.encode_cached(TEXTS[::-1], tokenizer, 32, "head", cache_dir=tmp_path)
    assert len(counted) == 5
    assert len(list(tmp_path.glob("*.npz"))) == 5
    short = data_mod.encode_cached(TEXTS, tokenizer, 48, "head", cache_dir=tmp_path)
    assert len(counted) == 5 and max(short.lengths) == 48


def test_cache_is_invalidated_when_the_tokenizer_changes(tiny_model, tmp_path, counted):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(tiny_model)
    cased = AutoTokenizer.from_pretrained(tiny_model, do_lower_case=False)  # another normalizer
    extended = AutoTokenizer.from_pretrained(tiny_model)
    extended.add_tokens(["gripping-ish"])  # another vocabulary
    data_mod.encode_cached(TEXTS, base, 32, cache_dir=tmp_path)
    data_mod.encode_cached(TEXTS, cased, 32, cache_dir=tmp_path)
    data_mod.encode_cached(TEXTS, extended, 32, cache_dir=tmp_path)
    assert len(counted) == 3
    # The same tokenizer loaded again (e.g. from a logged model's copy) hits the cache.
    data_mod.encode_cached(TEXTS, AutoTokenizer.from_pretrained(tiny_model), 32, cache_dir=tmp_path)
    assert len(counted) == 3


def test_fingerprint_ignores_per_call_truncation_state(tokenizer):
    before = data_mod.tokenizer_fingerprint(tokenizer)
    tokenizer(TEXTS, truncation=True, max_length=7, padding="max_length")
    assert data_mod.tokenizer_fingerprint(tokenizer) == before


def test_corrupt_cache_entry_is_recomputed(tokenizer, tmp_path, counted):
    expected = data_mod.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not a numpy file")
    assert _same(data_mod.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path), expected)
    assert len(counted) == 2
    assert _same(data_mod.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path), expected)
    assert len(counted) == 2  # rewritten whole


def test_cache_dir_from_environment_and_off(tokenizer, tmp_path, monkeypatch, counted):
    monkeypatch.setenv("SENTIMENT_CACHE_DIR", str(tmp_path / "c"))
    assert data_mod.token_cache_dir() == tmp_path / "c" / "tokens"
    data_mod.encode_cached(TEXTS, tokenizer, 32)
    data_mod.encode_cached(TEXTS, tokenizer, 32)
    assert len(counted) == 1 and list((tmp_path / "c" / "tokens").glob("*.npz"))
    monkeypatch.setenv("SENTIMENT_CACHE_DIR", "off")
    assert data_mod.token_cache_dir() is None
    data_mod.encode_cached(TEXTS, tokenizer, 32)
    assert len(counted) == 2


def test_cache_keeps_to_its_size_cap_least_recently_used_first(tokenizer, tmp_path, monkeypatch, counted):
    import os
    import time

    data_mod.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    size = entry.stat().st_size
    monkeypatch.setenv("SENTIMENT_CACHE_MAX_MB", str(2.5 * size / 2**20))  # room for two entries
    variants = {length: None for length in (32, 40, 48)}
    for i, length in enumerate(variants):  # written a second apart: distinct mtimes
        data_mod.encode_cached(TEXTS, tokenizer, length, cache_dir=tmp_path)
        variants[length] = data_mod.token_cache_key(TEXTS, tokenizer, length, "head")
        os.utime(tmp_path / f"{variants[length]}.npz", (time.time() - 100 + i, time.time() - 100 + i))
    # writing 48 pruned 32, the least recently used
    assert {p.stem for p in tmp_path.glob("*.npz")} == {variants[40], variants[48]}
    data_mod.encode_cached(TEXTS, tokenizer, 40, cache_dir=tmp_path)  # a hit: 40 is now the most recent
    assert [length for length, _ in counted] == [32, 40, 48]
    data_mod.encode_cached(TEXTS, tokenizer, 56, cache_dir=tmp_path)  # a miss: prunes 48, keeps 40
    assert {p.stem for p in tmp_path.glob("*.npz")} == {variants[40], data_mod.token_cache_key(TEXTS, tokenizer, 56, "head")}


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_bad_cache_cap_is_one_clear_error(tokenizer, tmp_path, monkeypatch, value):
    from sentiment.errors import UserError

    monkeypatch.setenv("SENTIMENT_CACHE_MAX_MB", value)
    with pytest.raises(UserError, match="SENTIMENT_CACHE_MAX_MB must be"):
        data_mod.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path)


def test_evaluation_tokenizes_through_the_cache(tiny_model, tokenizer, tmp_path, monkeypatch, counted):
    import pandas as pd

    from sentiment import evaluate
    from sentiment.model import build_model

    monkeypatch.setenv("SENTIMENT_CACHE_DIR", str(tmp_path))
    frame = pd.DataFrame({"id": list("abcd"), "text": TEXTS, "label": [1, 0, 1, 1]})
    config = build_config("quick", {"model.name": tiny_model, "data.max_length": 32})
    model = build_model(config.model)
    first = evaluate.predict_frame(model, tokenizer, frame, config, torch.device("cpu"))
    second = evaluate.predict_frame(model, tokenizer, frame, config, torch.device("cpu"))
    assert len(counted) == 1
    assert np.allclose(first["probability"], second["probability"])
    assert first["n_tokens"].tolist() == second["n_tokens"].tolist()


# ----------------------------------------------------------------------------- compile, SDPA


def test_compile_option_reaches_the_config():
    assert build_config("quick").train.compile is False
    assert build_config("quick", {"train.compile": "true"}).train.compile is True


def test_setup_compiles_the_model_in_place_only_when_asked(tiny_model, tokenizer, monkeypatch):
    from sentiment.model import build_model

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: compiled.append(kwargs))
    encoded = data_mod.encode(TEXTS, tokenizer, 32)
    for flag in (False, True):
        config = build_config("quick", {"model.name": tiny_model, "data.max_length": 32, "train.device": "cpu", "train.compile": flag})
        model = build_model(config.model)
        parts = train_mod.setup(model, encoded, config)
        assert parts.model is model  # in place: names in state_dict and save_pretrained unchanged
    assert compiled == [{"dynamic": True}]


def test_encoders_use_sdpa_attention(tiny_model):
    from sentiment.model import build_model

    model = build_model(ModelConfig(name=tiny_model))
    assert model.config._attn_implementation == "sdpa"
