"""The training loop against the in-memory tracker: hooks (epoch end, checkpoints, stop signal)
and a resume from a saved state that reproduces the uninterrupted run exactly."""

from __future__ import annotations

import pytest

from sentiment import data as data_mod
from sentiment import model as model_mod
from sentiment import tokens
from sentiment.errors import Interrupted
from sentiment.tracking import InMemoryTracker
from sentiment.train import Checkpointer, Hooks, fit
from sentiment.train.checkpoint import STATE_FILE
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def inputs(tiny_model, reviews_csv):
    """Config, tokenizer and encoded train/val splits for two short epochs."""
    config = tiny_config(tiny_model, reviews_csv, **{"train.epochs": 2, "train.log_every_steps": 2})
    tokenizer = model_mod.load_tokenizer(tiny_model)
    splits = data_mod.load_splits(config.data, config.seed)
    d = config.data
    return config, *(
        tokens.encode_reviews(frame, tokenizer, d.max_length, d.truncation) for frame in (splits.train, splits.val)
    )


def _model(config):
    from transformers import set_seed

    set_seed(config.seed)
    return model_mod.build_model(config.model, config.data.max_length)


def test_hooks_are_called_and_an_epoch_model_id_ranks_its_metrics(inputs, tmp_path):
    config, train, val = inputs
    tracker, seen = InMemoryTracker(), []

    def on_epoch_end(result, net):
        seen.append(result.epoch)
        return f"m-epoch-{result.epoch}"

    hooks = Hooks(checkpoints=Checkpointer(tmp_path, tracker), on_epoch_end=on_epoch_end)
    history = fit(_model(config), train, val, config, tracker, tmp_path, hooks=hooks)
    assert seen == [1, 2] and [e.epoch for e in history.epochs] == [1, 2]
    assert tracker.metrics["val/accuracy"][1][2] == "m-epoch-2"
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / "best").is_dir() and history.best_dir == tmp_path / "best"
    assert "checkpoints/state.pt" in tracker.artifacts


def test_stop_signal_saves_then_resume_continues_bit_for_bit(inputs, tmp_path):
    config, train, val = inputs
    reference = InMemoryTracker()
    expected = fit(_model(config), train, val, config, reference, tmp_path / "reference")

    interrupted, calls = InMemoryTracker(), []

    def stop_at_step_7() -> int:
        calls.append(1)
        return 15 if len(calls) == 7 else 0

    first = tmp_path / "first"
    with pytest.raises(Interrupted):
        hooks = Hooks(should_stop=stop_at_step_7, checkpoints=Checkpointer(first, interrupted))
        fit(_model(config), train, val, config, interrupted, first, hooks=hooks)
    state = Checkpointer.load(first / STATE_FILE)
    assert state["progress"]["step"] == 7
    resumed = fit(_model(config), train, val, config, interrupted, first, resume=state)
    assert [e.val_accuracy for e in resumed.epochs] == [e.val_accuracy for e in expected.epochs]
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in expected.epochs]
    assert resumed.step_loss == expected.step_loss and resumed.steps == expected.steps
