"""analyze.eda: exploration counts tokens as training does, a chunk at a time."""

from __future__ import annotations

import numpy as np
import pytest

from sentiment import data as data_mod
from sentiment import model as model_mod
from sentiment import tokens
from sentiment.analyze import eda as eda_mod
from sentiment.config import DataConfig


def test_exploration_streams_token_counts(tiny_model):
    tokenizer = model_mod.load_tokenizer(tiny_model)
    splits = data_mod.load_splits(DataConfig(source="sample", test_fraction=0.2, val_fraction=0.2), seed=42)
    eda = eda_mod.explore(splits, tokenizer, max_length=128, tokenizer_name="tiny")
    encoded = tokens.encode(splits.test["text"].tolist(), tokenizer, 128)
    np.testing.assert_array_equal(eda.splits["test"].tokens, encoded.full_lengths)
    chunked, _, _ = tokens.count_tokens(splits.test["text"].tolist(), tokenizer, chunk=7)
    np.testing.assert_array_equal(chunked, encoded.full_lengths)
    rows = {r["split"]: r for r in eda.summary_rows()}
    assert rows["all"]["examples"] == 390 and rows["test"]["positive_share"] == 0.5
    assert rows["test"]["truncated_share"] == pytest.approx((encoded.full_lengths > 128).mean())
    assert eda.tokenizer["vocab_size"] == 30522 and eda.tokenizer["special_tokens"]["cls_token"] == "[CLS]"
    assert eda.tokenizer["example_tokens"][0] == "[CLS]" and eda.vocabulary_size > 1000
