"""DistilBERT, BERT and RoBERTa all get layer-wise groups, freezing and classifier dropout
(tiny random configs saved to disk: the real transformers classes, no download)."""

from __future__ import annotations

import pytest
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

from sentiment.config import ModelConfig
from sentiment.errors import UserError
from sentiment.model import build_model, encoder_layers, layerwise_param_groups, lr_table

TINY = {"vocab_size": 200, "max_position_embeddings": 64}
ARCHITECTURES = {
    "distilbert": (
        DistilBertModel,
        DistilBertConfig(n_layers=3, dim=32, n_heads=2, hidden_dim=64, **TINY),
        "seq_classif_dropout",
        64,
    ),
    "bert": (
        BertModel,
        BertConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=2, intermediate_size=64, **TINY),
        "classifier_dropout",
        64,
    ),
    "roberta": (
        RobertaModel,
        RobertaConfig(
            num_hidden_layers=3, hidden_size=32, num_attention_heads=2, intermediate_size=64, pad_token_id=1, **TINY
        ),
        "classifier_dropout",
        62,
    ),
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def saved(request, tmp_path_factory):
    model_cls, config, dropout_attr, limit = ARCHITECTURES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    model_cls(config).save_pretrained(folder)
    return str(folder), dropout_attr, limit


def test_groups_freezing_and_dropout(saved):
    folder, dropout_attr, _ = saved
    model = build_model(ModelConfig(name=folder, dropout=0.2, freeze_layers=1))
    assert getattr(model.config, dropout_attr) == 0.2
    assert model.config.id2label == {0: "negative", 1: "positive"}
    layers = encoder_layers(model)
    assert len(layers) == 3
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    rates = {row["group"]: row["lr"] for row in lr_table(layerwise_param_groups(model, 1e-3, 0.5, 0.01))}
    assert "embeddings" not in rates and "layer_0" not in rates  # frozen
    assert rates["head"] == rates["layer_2"] == pytest.approx(1e-3)
    assert rates["layer_1"] == pytest.approx(5e-4)


def test_position_limit(saved):
    folder, _, limit = saved
    build_model(ModelConfig(name=folder), max_length=limit)
    with pytest.raises(UserError, match=f"limit of model .* \\({limit}\\)"):
        build_model(ModelConfig(name=folder), max_length=limit + 1)
