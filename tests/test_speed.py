"""The fast paths: torch.compile as an option, SDPA attention.

The token cache's tests live in test_tokens.py, the length-grouped sampler's in test_data.py.
"""

from __future__ import annotations

import torch

from sentiment import tokens
from sentiment import train as train_mod
from sentiment.config import ModelConfig, build_config
from tests.conftest import TEXTS

# ----------------------------------------------------------------------------- compile, SDPA


def test_compile_option_reaches_the_config():
    assert build_config("quick").train.compile is False
    assert build_config("quick", {"train.compile": "true"}).train.compile is True


def test_setup_compiles_the_model_in_place_only_when_asked(tiny_model, tokenizer, monkeypatch):
    from sentiment.model import build_model

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: compiled.append(kwargs))
    encoded = tokens.encode(TEXTS, tokenizer, 32)
    for flag in (False, True):
        config = build_config(
            "quick", {"model.name": tiny_model, "data.max_length": 32, "train.device": "cpu", "train.compile": flag}
        )
        model = build_model(config.model)
        parts = train_mod.setup(model, encoded, config)
        assert parts.model is model  # in place: names in state_dict and save_pretrained unchanged
    assert compiled == [{"dynamic": True}]


def test_encoders_use_sdpa_attention(tiny_model):
    from sentiment.model import build_model

    model = build_model(ModelConfig(name=tiny_model))
    assert model.config._attn_implementation == "sdpa"
