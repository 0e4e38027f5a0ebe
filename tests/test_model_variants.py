"""Architecture variants for ablations: dropping top layers, masking unimportant heads, and
encoders trained from scratch (tiny random models saved to disk; no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sentiment.config import build_config
from sentiment.errors import UserError
from sentiment.heads import head_importance, mask_heads
from sentiment.model import (
    attention_projections,
    build_model,
    count_parameters,
    encoder_layers,
    load_tokenizer,
    load_trained,
)
from tests.conftest import save_random_encoder

POSITIVE = ["a great and wonderful film", "loved it, brilliant acting", "superb, moving and charming"] * 6
NEGATIVE = ["an awful and boring film", "dull plot, wooden acting", "a tedious waste of time"] * 6


@pytest.fixture(scope="module")
def four_head_model(tmp_path_factory, tiny_model):
    """A random 2-layer BERT with 4 heads of size 8, and MiniLM's tokenizer."""
    from transformers import BertConfig, BertModel

    def config(vocab_size: int) -> BertConfig:
        return BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )

    return save_random_encoder(tmp_path_factory.mktemp("four-heads"), BertModel, config, tiny_model)


def config_for(name: str, **overrides):
    flat = {f"model.{k}": v for k, v in overrides.items()}
    return build_config("seed", {"model.name": name, "data.max_length": 32, "train.batch_size": 8, **flat})


def texts_and_labels():
    return POSITIVE + NEGATIVE, np.array([1] * len(POSITIVE) + [0] * len(NEGATIVE))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"model.keep_layers": -1}, "model.keep_layers must be >= 0"),
        ({"model.num_heads": 4}, "model.num_heads only apply with model.from_scratch true"),
        ({"model.from_scratch": True, "model.keep_heads": 2}, "keep_heads prune a pretrained encoder"),
        (
            {"model.from_scratch": True, "model.num_heads": 3, "model.hidden_size": 64},
            "must be a multiple of model.num_heads 3",
        ),
    ],
)
def test_variant_fields_are_validated(overrides, fragment):
    with pytest.raises(UserError) as caught:
        build_config("seed", overrides)
    assert fragment in str(caught.value)


# ----------------------------------------------------------------------------- keep_layers


def test_keep_layers_drops_the_top_layers(tiny_model):
    full = build_model(config_for(tiny_model).model)
    kept = build_model(config_for(tiny_model, keep_layers=1).model)
    assert len(encoder_layers(kept)) == 1 and kept.config.num_hidden_layers == 1
    # the kept layer is the pretrained bottom one, not a fresh one
    assert torch.equal(
        encoder_layers(kept)[0].attention.self.query.weight, encoder_layers(full)[0].attention.self.query.weight
    )
    assert count_parameters(kept)["total"] < count_parameters(full)["total"]
    with pytest.raises(UserError, match=r"keep_layers 3 is above the model's depth \(2 layers\)"):
        build_model(config_for(tiny_model, keep_layers=3).model)
    with pytest.raises(UserError, match="freeze_layers 2 is above the model's depth"):
        build_model(config_for(tiny_model, keep_layers=1, freeze_layers=2).model)


# ----------------------------------------------------------------------------- from scratch


def test_from_scratch_reshapes_and_initialises_randomly(tiny_model):
    scratch = build_model(config_for(tiny_model, from_scratch=True, num_layers=3, num_heads=4, hidden_size=16).model)
    assert len(encoder_layers(scratch)) == 3
    assert (scratch.config.hidden_size, scratch.config.num_attention_heads, scratch.config.intermediate_size) == (
        16,
        4,
        64,
    )
    pretrained = build_model(config_for(tiny_model, from_scratch=True).model)  # the base shape, fresh weights
    loaded = build_model(config_for(tiny_model).model)
    query = lambda m: encoder_layers(m)[0].attention.self.query.weight  # noqa: E731
    assert query(pretrained).shape == query(loaded).shape and not torch.equal(query(pretrained), query(loaded))
    with pytest.raises(UserError, match="not a multiple of 2 attention heads"):
        build_model(config_for(tiny_model, from_scratch=True, hidden_size=33).model)


def test_from_scratch_distilbert_sets_its_feed_forward(tmp_path, tiny_model):
    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(
        DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    ).save_pretrained(tmp_path)
    model = build_model(config_for(str(tmp_path), from_scratch=True, num_layers=1, num_heads=4, hidden_size=48).model)
    assert (model.config.n_layers, model.config.n_heads, model.config.dim, model.config.hidden_dim) == (1, 4, 48, 192)


# ----------------------------------------------------------------------------- keep_heads


def test_head_importance_has_one_score_per_layer_and_head(four_head_model):
    config = config_for(four_head_model)
    model = build_model(config.model)
    tokenizer = load_tokenizer(four_head_model)
    batch = tokenizer(POSITIVE[:4] + NEGATIVE[:4], padding=True, return_tensors="pt")
    batches = [
        {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": torch.tensor([1] * 4 + [0] * 4),
        }
    ]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scores = head_importance(model, batches)
    assert scores.shape == (2, 4) and (scores > 0).all()
    # scoring leaves the model as it was: same weights (the probed head is reset), same flags
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_mask_heads_zeroes_heads_that_stay_zero_through_training_and_saving(four_head_model, tmp_path):
    config = config_for(four_head_model, keep_heads=1)
    model = build_model(config.model)
    tokenizer = load_tokenizer(four_head_model)
    texts, labels = texts_and_labels()
    masked = mask_heads(model, texts, labels, tokenizer, config)
    assert sorted(masked) == [0, 1] and all(len(heads) == 3 for heads in masked.values())
    assert model.config.sentiment_masked_heads == {str(i): h for i, h in masked.items()}
    full = count_parameters(build_model(config_for(four_head_model).model))
    per_head = 3 * (8 * 32 + 8) + 32 * 8  # q/k/v rows with biases + output-projection columns
    assert count_parameters(model) == {"total": full["total"], "trainable": full["trainable"] - 6 * per_head}

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model.train()
    for _ in range(3):
        F.cross_entropy(model(**batch).logits, torch.tensor(labels)).backward()
        optimizer.step()
        optimizer.zero_grad()

    def masked_weights(net):
        out = []
        for i, heads in masked.items():
            query, key, value, output = attention_projections(encoder_layers(net)[i])
            for h in heads:
                rows = slice(8 * h, 8 * (h + 1))
                out += [
                    query.weight[rows],
                    key.weight[rows],
                    value.weight[rows],
                    value.bias[rows],
                    output.weight[:, rows],
                ]
        return out

    assert all(float(w.detach().abs().sum()) == 0.0 for w in masked_weights(model))
    kept = [
        attention_projections(encoder_layers(model)[0])[2].weight[8 * h : 8 * (h + 1)]
        for h in range(4)
        if h not in masked[0]
    ]
    assert all(float(w.detach().abs().sum()) > 0 for w in kept)
    model.save_pretrained(tmp_path)
    reloaded = load_trained(tmp_path)
    assert all(float(w.detach().abs().sum()) == 0.0 for w in masked_weights(reloaded))
    assert reloaded.config.sentiment_masked_heads == model.config.sentiment_masked_heads


def test_keep_heads_bounds(four_head_model):
    tokenizer = load_tokenizer(four_head_model)
    texts, labels = texts_and_labels()
    config = config_for(four_head_model, keep_heads=5)
    with pytest.raises(UserError, match="keep_heads 5 is above the model's 4 heads"):
        mask_heads(build_model(config.model), texts, labels, tokenizer, config)
    config = config_for(four_head_model, keep_heads=4)
    model = build_model(config.model)
    assert mask_heads(model, texts, labels, tokenizer, config) == {}
    assert not hasattr(model.config, "sentiment_masked_heads")
    assert mask_heads(model, texts, labels, tokenizer, config_for(four_head_model)) == {}
