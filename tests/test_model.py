"""Unit tests for sentiment.model: building, freezing, layer-wise learning rates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sentiment import hub
from sentiment import model as model_mod
from sentiment.config import ModelConfig
from sentiment.errors import UserError
from sentiment.model import (
    build_model,
    count_parameters,
    encoder_layers,
    layerwise_param_groups,
    lr_table,
    resolve_source,
)
from tests.conftest import save_random_encoder


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return build_model(ModelConfig(name=tiny_model, dropout=0.1))


@pytest.fixture(scope="module")
def tiny_frozen(tiny_model):
    return build_model(ModelConfig(name=tiny_model, dropout=0.25, freeze_layers=1))


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory, tiny_model):
    """A random 3-layer DistilBERT, to check the model-type specific paths."""
    from transformers import DistilBertConfig, DistilBertModel

    def config(vocab_size: int) -> DistilBertConfig:
        return DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=3, n_heads=2, hidden_dim=64)

    return save_random_encoder(tmp_path_factory.mktemp("tiny-distilbert"), DistilBertModel, config, tiny_model)


def groups_by(groups):
    return {(g["name"], g["weight_decay"]): g for g in groups}


# ----------------------------------------------------------------------------- layer-wise groups


def test_layerwise_lrs_on_two_layer_model(tiny):
    groups = layerwise_param_groups(tiny, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert set(lrs) == {"embeddings", "layer_0", "layer_1", "head"}
    assert lrs["head"] == pytest.approx(1e-3)
    assert lrs["layer_1"] == pytest.approx(1e-3)
    assert lrs["layer_0"] == pytest.approx(9e-4)
    assert lrs["embeddings"] == pytest.approx(8.1e-4)
    # groups come ordered bottom to top, no-decay group first within a name
    assert [(g["name"], g["weight_decay"]) for g in groups] == [
        ("embeddings", 0.0),
        ("embeddings", 0.01),
        ("layer_0", 0.0),
        ("layer_0", 0.01),
        ("layer_1", 0.0),
        ("layer_1", 0.01),
        ("head", 0.0),
        ("head", 0.01),
    ]


def test_layerwise_groups_partition_trainable_params_and_decay_rules(tiny):
    groups = layerwise_param_groups(tiny, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    names = {id(p): n for n, p in tiny.named_parameters()}
    seen: list[int] = []
    for group in groups:
        assert set(group) == {"name", "params", "lr", "weight_decay"}
        for param in group["params"]:
            name = names[id(param)]
            seen.append(id(param))
            no_decay = name.endswith(".bias") or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if no_decay else 0.01), name
            # the group name matches where the parameter lives
            if name.startswith("bert.embeddings."):
                assert group["name"] == "embeddings", name
            elif name.startswith("bert.encoder.layer."):
                assert group["name"] == f"layer_{name.split('.')[3]}", name
            else:
                assert name.startswith(("bert.pooler.", "classifier.")), name
                assert group["name"] == "head", name
    trainable = [id(p) for p in tiny.parameters() if p.requires_grad]
    assert len(seen) == len(set(seen)), "a parameter is in two groups"
    assert set(seen) == set(trainable)
    by = groups_by(groups)
    assert any(names[id(p)] == "classifier.weight" for p in by[("head", 0.01)]["params"])
    assert any(names[id(p)] == "classifier.bias" for p in by[("head", 0.0)]["params"])
    assert any(names[id(p)] == "bert.embeddings.LayerNorm.weight" for p in by[("embeddings", 0.0)]["params"])
    assert any(names[id(p)] == "bert.embeddings.word_embeddings.weight" for p in by[("embeddings", 0.01)]["params"])


def test_layer_decay_one_means_flat_lr(tiny):
    groups = layerwise_param_groups(tiny, lr=5e-5, layer_decay=1.0, weight_decay=0.0)
    assert [g["lr"] for g in groups] == pytest.approx([5e-5] * len(groups))
    assert len(groups) == 8
    assert all(g["weight_decay"] == 0.0 for g in groups)


def test_lr_table_rows(tiny):
    groups = layerwise_param_groups(tiny, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    table = lr_table(groups)
    assert [row["group"] for row in table] == ["embeddings", "layer_0", "layer_1", "head"]
    rows = {row["group"]: row for row in table}
    assert rows["layer_0"]["lr"] == pytest.approx(9e-4)
    assert rows["embeddings"]["lr"] == pytest.approx(8.1e-4)
    assert rows["embeddings"]["parameters"] == sum(p.numel() for p in tiny.bert.embeddings.parameters())
    assert rows["layer_1"]["parameters"] == sum(p.numel() for p in tiny.bert.encoder.layer[1].parameters())
    head = sum(p.numel() for p in tiny.bert.pooler.parameters()) + sum(p.numel() for p in tiny.classifier.parameters())
    assert rows["head"]["parameters"] == head
    assert sum(row["parameters"] for row in table) == count_parameters(tiny)["trainable"]


def test_layerwise_groups_leave_frozen_params_out(tiny_frozen):
    groups = layerwise_param_groups(tiny_frozen, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    assert {g["name"] for g in groups} == {"layer_1", "head"}
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in tiny_frozen.parameters() if p.requires_grad}
    assert sum(r["parameters"] for r in lr_table(groups)) == count_parameters(tiny_frozen)["trainable"]


def test_groups_work_with_adamw(tiny):
    groups = layerwise_param_groups(tiny, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]


# ----------------------------------------------------------------------------- build_model


def test_build_model_labels_dropout_and_freezing(tiny_frozen):
    model = tiny_frozen
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    assert model.config.num_labels == 2
    assert model.config.classifier_dropout == 0.25
    assert model.dropout.p == 0.25  # the dropout actually applied before the classifier
    assert model.classifier.out_features == 2
    assert all(not p.requires_grad for p in model.bert.embeddings.parameters())
    assert all(not p.requires_grad for p in model.bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in model.bert.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert all(p.requires_grad for p in model.bert.pooler.parameters())
    counts = count_parameters(model)
    frozen = sum(p.numel() for p in model.bert.embeddings.parameters()) + sum(
        p.numel() for p in model.bert.encoder.layer[0].parameters()
    )
    assert counts["trainable"] < counts["total"]
    assert counts["total"] - counts["trainable"] == frozen
    assert counts["total"] == sum(p.numel() for p in model.parameters())


def test_build_model_without_freezing_trains_everything(tiny):
    counts = count_parameters(tiny)
    assert counts["trainable"] == counts["total"] > 0
    assert len(encoder_layers(tiny)) == 2
    out = tiny(input_ids=torch.tensor([[101, 2204, 102]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    assert out.logits.shape == (1, 2)


def test_freeze_all_layers_allowed(tiny_model):
    model = build_model(ModelConfig(name=tiny_model, freeze_layers=2))
    groups = layerwise_param_groups(model, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    assert {g["name"] for g in groups} == {"head"}


def test_freeze_layers_above_depth(tiny_model):
    with pytest.raises(UserError, match=r"freeze_layers 3 is above the model's depth \(2 layers\)"):
        build_model(ModelConfig(name=tiny_model, freeze_layers=3))


def test_max_length_above_position_limit(tiny_model):
    build_model(ModelConfig(name=tiny_model), max_length=512)  # at the limit: fine
    with pytest.raises(UserError, match=r"max_length 513 is above the limit .*\(512\)"):
        build_model(ModelConfig(name=tiny_model), max_length=513)


def test_position_limit_roberta_offset():
    from transformers import BertConfig, RobertaConfig

    assert model_mod.position_limit(RobertaConfig(max_position_embeddings=514)) == 512
    assert model_mod.position_limit(BertConfig(max_position_embeddings=512)) == 512
    with pytest.raises(UserError, match="513"):
        model_mod.check_max_length(RobertaConfig(max_position_embeddings=514), 513, "roberta-base")
    model_mod.check_max_length(RobertaConfig(max_position_embeddings=514), 512, "roberta-base")
    model_mod.check_max_length(BertConfig(), None, "x")  # no max_length: nothing to check


def test_unknown_local_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match="no-such-model"):
        build_model(ModelConfig(name=str(missing)))


def test_existing_folder_without_model(tmp_path):
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(UserError, match="cannot load model"):
        build_model(ModelConfig(name=str(tmp_path / "empty-model")))


def test_load_tokenizer_unknown_path(tmp_path):
    with pytest.raises(UserError, match="no-such-tokenizer"):
        model_mod.load_tokenizer(str(tmp_path / "no-such-tokenizer"))


def test_resolve_source():
    folder = Path(resolve_source("offline-minilm"))
    assert folder.is_dir()
    assert (folder / "config.json").is_file()
    assert hub.is_hub_id("distilbert-base-uncased") and hub.is_hub_id("org/model")
    assert not any(
        hub.is_hub_id(name)
        for name in ("offline-minilm", "/no/such", "./m", "a/b/c", "models:/m@champion", "runs:/r/model")
    )


def test_hub_id_without_the_hub_is_one_line(monkeypatch):
    """Unreachable Hub (a closed local port), model not cached: the error names what works offline."""
    from tests.conftest import free_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.unreachable.cache_clear()
    try:
        with pytest.raises(
            UserError, match=r"'org/not-cached-anywhere' is not in the local Hugging Face cache .* offline-minilm"
        ):
            resolve_source("org/not-cached-anywhere")
    finally:
        hub.unreachable.cache_clear()


def test_offline_minilm_loads_six_layers():
    model = build_model(ModelConfig(name="offline-minilm", dropout=0.2, freeze_layers=6))
    assert model.config.model_type == "bert"
    assert len(encoder_layers(model)) == 6
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.classifier_dropout == 0.2
    # pretrained weights were loaded, not random ones: the encoder matches the packaged checkpoint
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(resolve_source("offline-minilm"))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    assert torch.equal(model.bert.encoder.layer[5].output.dense.weight, reference.encoder.layer[5].output.dense.weight)
    counts = count_parameters(model)
    head = sum(p.numel() for p in model.bert.pooler.parameters()) + sum(
        p.numel() for p in model.classifier.parameters()
    )
    assert counts["trainable"] == head
    tokenizer = model_mod.load_tokenizer("offline-minilm")
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id


def test_distilbert_dropout_attribute_and_freezing(tiny_distilbert):
    model = build_model(ModelConfig(name=tiny_distilbert, dropout=0.35, freeze_layers=2))
    assert model.config.model_type == "distilbert"
    assert model.config.seq_classif_dropout == 0.35
    assert model.dropout.p == 0.35
    layers = encoder_layers(model)
    assert len(layers) == 3
    assert all(not p.requires_grad for p in model.distilbert.embeddings.parameters())
    assert all(not p.requires_grad for layer in layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in layers[2].parameters())
    groups = layerwise_param_groups(model, lr=1e-3, layer_decay=0.5, weight_decay=0.01)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"layer_2": pytest.approx(1e-3), "head": pytest.approx(1e-3)}
    unfrozen = build_model(ModelConfig(name=tiny_distilbert))
    lrs = {g["name"]: g["lr"] for g in layerwise_param_groups(unfrozen, lr=1e-3, layer_decay=0.5, weight_decay=0.0)}
    assert lrs == {
        "embeddings": pytest.approx(1.25e-4),
        "layer_0": pytest.approx(2.5e-4),
        "layer_1": pytest.approx(5e-4),
        "layer_2": pytest.approx(1e-3),
        "head": pytest.approx(1e-3),
    }
