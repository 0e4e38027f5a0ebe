"""Unit tests for sentiment.tokens: special tokens, head and head+tail truncation, word-piece
spans, streaming token counts, and the token cache (reuse, invalidation, size cap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentiment import tokens
from sentiment.errors import UserError
from tests.conftest import TEXTS

# ----------------------------------------------------------------------------- encode and truncate


LONG_TEXT = " ".join(f"word{i}" for i in range(5)) + " " + "film " * 300 + "the ending was wonderful"


def test_special_tokens_are_cls_sep(tokenizer):
    prefix, suffix = tokens.special_tokens(tokenizer)
    assert prefix == [tokenizer.cls_token_id]
    assert suffix == [tokenizer.sep_token_id]


def test_encode_short_text_untouched(tokenizer):
    enc = tokens.encode(["a good film"], tokenizer, max_length=32)
    expected = tokenizer("a good film")["input_ids"]
    assert enc.input_ids == [expected]
    assert enc.full_lengths.tolist() == [len(expected)]
    assert enc.lengths.tolist() == [len(expected)]


def test_encode_head_truncation(tokenizer):
    enc = tokens.encode([LONG_TEXT, "short one"], tokenizer, max_length=64, truncation="head")
    ids = enc.input_ids[0]
    content = tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) == 64
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1:-1] == content[:62]
    assert enc.full_lengths[0] == len(content) + 2
    assert enc.full_lengths[0] > 64
    assert enc.lengths.tolist() == [64, len(tokenizer("short one")["input_ids"])]


def test_encode_head_tail_keeps_first_and_last_tokens(tokenizer):
    max_length = 64
    enc = tokens.encode([LONG_TEXT], tokenizer, max_length=max_length, truncation="head_tail")
    ids = enc.input_ids[0]
    content = tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"]
    budget = max_length - 2
    head = round(budget * 128 / 510)
    assert len(ids) == max_length
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1] == content[0] and ids[-2] == content[-1]
    assert ids[1:-1] == content[:head] + content[-(budget - head) :]
    assert "wonderful" in tokenizer.decode(ids)
    assert "wonderful" not in tokenizer.decode(tokens.encode([LONG_TEXT], tokenizer, max_length, "head").input_ids[0])
    assert enc.full_lengths[0] == len(content) + 2


# ----------------------------------------------------------------------------- the token cache


@pytest.fixture
def counted(monkeypatch):
    """Counts real tokenizations (cache misses) behind encode_cached."""
    calls = []
    real = tokens.encode

    def encode(texts, tokenizer, max_length, truncation="head"):
        calls.append((max_length, truncation))
        return real(texts, tokenizer, max_length, truncation)

    monkeypatch.setattr(tokens, "encode", encode)
    return calls


def _same(a: tokens.Encoded, b: tokens.Encoded) -> bool:
    return a.input_ids == b.input_ids and np.array_equal(a.full_lengths, b.full_lengths)


def test_cached_encoding_equals_encode_and_is_reused(tokenizer, tmp_path, counted):
    first = tokens.encode_cached(TEXTS, tokenizer, 32, "head", cache_dir=tmp_path)
    again = tokens.encode_cached(TEXTS, tokenizer, 32, "head", cache_dir=tmp_path)
    assert len(counted) == 1, "the second call must be read from the cache"
    assert _same(first, again)
    assert _same(again, tokens.encode(TEXTS, tokenizer, 32, "head"))
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert again.full_lengths[1] > 32 and max(again.lengths) == 32  # truncated, full length kept


def test_cache_is_invalidated_by_max_length_truncation_and_texts(tokenizer, tmp_path, counted):
    tokens.encode_cached(TEXTS, tokenizer, 32, "head", cache_dir=tmp_path)
    tokens.encode_cached(TEXTS, tokenizer, 48, "head", cache_dir=tmp_path)
    tokens.encode_cached(TEXTS, tokenizer, 32, "head_tail", cache_dir=tmp_path)
    tokens.encode_cached([*TEXTS[:-1], TEXTS[-1] + "!"], tokenizer, 32, "head", cache_dir=tmp_path)
    tokens.encode_cached(TEXTS[::-1], tokenizer, 32, "head", cache_dir=tmp_path)
    assert len(counted) == 5
    assert len(list(tmp_path.glob("*.npz"))) == 5
    short = tokens.encode_cached(TEXTS, tokenizer, 48, "head", cache_dir=tmp_path)
    assert len(counted) == 5 and max(short.lengths) == 48


def test_cache_is_invalidated_when_the_tokenizer_changes(tiny_model, tmp_path, counted):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(tiny_model)
    cased = AutoTokenizer.from_pretrained(tiny_model, do_lower_case=False)  # another normalizer
    extended = AutoTokenizer.from_pretrained(tiny_model)
    extended.add_tokens(["gripping-ish"])  # another vocabulary
    tokens.encode_cached(TEXTS, base, 32, cache_dir=tmp_path)
    tokens.encode_cached(TEXTS, cased, 32, cache_dir=tmp_path)
    tokens.encode_cached(TEXTS, extended, 32, cache_dir=tmp_path)
    assert len(counted) == 3
    # The same tokenizer loaded again (e.g. from a logged model's copy) hits the cache.
    tokens.encode_cached(TEXTS, AutoTokenizer.from_pretrained(tiny_model), 32, cache_dir=tmp_path)
    assert len(counted) == 3


def test_fingerprint_ignores_per_call_truncation_state(tokenizer):
    before = tokens.tokenizer_fingerprint(tokenizer)
    tokenizer(TEXTS, truncation=True, max_length=7, padding="max_length")
    assert tokens.tokenizer_fingerprint(tokenizer) == before


def test_corrupt_cache_entry_is_recomputed(tokenizer, tmp_path, counted):
    expected = tokens.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not a numpy file")
    assert _same(tokens.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path), expected)
    assert len(counted) == 2
    assert _same(tokens.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path), expected)
    assert len(counted) == 2  # rewritten whole


def test_cache_dir_from_environment_and_off(tokenizer, tmp_path, monkeypatch, counted):
    monkeypatch.setenv("SENTIMENT_CACHE_DIR", str(tmp_path / "c"))
    assert tokens.token_cache_dir() == tmp_path / "c" / "tokens"
    tokens.encode_cached(TEXTS, tokenizer, 32)
    tokens.encode_cached(TEXTS, tokenizer, 32)
    assert len(counted) == 1 and list((tmp_path / "c" / "tokens").glob("*.npz"))
    monkeypatch.setenv("SENTIMENT_CACHE_DIR", "off")
    assert tokens.token_cache_dir() is None
    tokens.encode_cached(TEXTS, tokenizer, 32)
    assert len(counted) == 2


def test_cache_keeps_to_its_size_cap_least_recently_used_first(tokenizer, tmp_path, monkeypatch, counted):
    import os
    import time

    tokens.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    size = entry.stat().st_size
    monkeypatch.setenv("SENTIMENT_CACHE_MAX_MB", str(2.5 * size / 2**20))  # room for two entries
    variants = {length: None for length in (32, 40, 48)}
    for i, length in enumerate(variants):  # written a second apart: distinct mtimes
        tokens.encode_cached(TEXTS, tokenizer, length, cache_dir=tmp_path)
        variants[length] = tokens.token_cache_key(TEXTS, tokenizer, length, "head")
        os.utime(tmp_path / f"{variants[length]}.npz", (time.time() - 100 + i, time.time() - 100 + i))
    # writing 48 pruned 32, the least recently used
    assert {p.stem for p in tmp_path.glob("*.npz")} == {variants[40], variants[48]}
    tokens.encode_cached(TEXTS, tokenizer, 40, cache_dir=tmp_path)  # a hit: 40 is now the most recent
    assert [length for length, _ in counted] == [32, 40, 48]
    tokens.encode_cached(TEXTS, tokenizer, 56, cache_dir=tmp_path)  # a miss: prunes 48, keeps 40
    assert {p.stem for p in tmp_path.glob("*.npz")} == {
        variants[40],
        tokens.token_cache_key(TEXTS, tokenizer, 56, "head"),
    }


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_bad_cache_cap_is_one_clear_error(tokenizer, tmp_path, monkeypatch, value):
    monkeypatch.setenv("SENTIMENT_CACHE_MAX_MB", value)
    with pytest.raises(UserError, match="SENTIMENT_CACHE_MAX_MB must be"):
        tokens.encode_cached(TEXTS, tokenizer, 32, cache_dir=tmp_path)


def test_evaluation_tokenizes_through_the_cache(tiny_model, tokenizer, tmp_path, monkeypatch, counted):
    import pandas as pd

    from sentiment import evaluate
    from sentiment.config import build_config
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


def test_kept_positions_follow_the_encode_rule():
    assert tokens.kept_positions(5, 8, "head_tail") == [0, 1, 2, 3, 4]
    assert tokens.kept_positions(10, 4, "head") == [0, 1, 2, 3]
    head, tail = tokens.head_and_tail(62, "head_tail")
    assert (head, tail) == (round(62 * 128 / 510), 62 - round(62 * 128 / 510))
    assert tokens.kept_positions(100, 62, "head_tail") == list(range(head)) + list(range(100 - tail, 100))


def test_spans_give_the_ids_encode_gives(tokenizer):
    for truncation in ("head", "head_tail"):
        spans = tokens.encode_with_spans(LONG_TEXT, tokenizer, 48, truncation)
        encoded = tokens.encode([LONG_TEXT], tokenizer, 48, truncation)
        assert spans.ids == encoded.input_ids[0] and len(spans.tokens) == len(spans.ids) == 48
        assert spans.content_tokens + 2 == encoded.full_lengths[0]


def test_counted_tokens_are_the_full_lengths(tokenizer):
    counted, total, unknown = tokens.count_tokens(TEXTS, tokenizer, chunk=3)
    encoded = tokens.encode(TEXTS, tokenizer, 16)
    np.testing.assert_array_equal(counted, encoded.full_lengths)
    assert total == int(encoded.full_lengths.sum()) - 2 * len(TEXTS) and unknown == 0


def test_encode_reviews_keeps_the_table_beside_its_ids(tokenizer, tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("SENTIMENT_CACHE_DIR", str(tmp_path))
    frame = pd.DataFrame({"id": list("abcd"), "text": TEXTS, "label": [1, 0, 1, 1]})
    reviews = tokens.encode_reviews(frame, tokenizer, 32, "head")
    assert reviews.encoded.input_ids == tokens.encode(TEXTS, tokenizer, 32).input_ids
    assert (
        reviews.labels.tolist() == [1, 0, 1, 1]
        and reviews.pad_id == tokenizer.pad_token_id
        and reviews.max_length == 32
    )
