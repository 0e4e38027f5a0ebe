"""The Tracker protocol: every tracker implements all of it with the same signatures; the
NullTracker of other ranks does nothing but has no catch-all; the in-memory tracker records."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pandas as pd
import pytest

from sentiment.config import Config
from sentiment.tracking import InMemoryTracker, MetricLogger, MlflowTracker, NullTracker, Publisher, Tracker


def _methods(protocol) -> list[str]:
    return sorted(
        name for name, member in vars(protocol).items() if inspect.isfunction(member) and not name.startswith("_")
    )


LOGGER_METHODS = _methods(MetricLogger)
PROTOCOL_METHODS = sorted(LOGGER_METHODS + _methods(Publisher))
LOOP_FILES = [Path(__file__).parents[2] / "sentiment" / "train" / name for name in ("loop.py", "step.py")]


def test_the_protocol_is_a_metric_logger_and_a_publisher():
    assert {MetricLogger, Publisher} <= set(Tracker.__mro__) and not _methods(Tracker)  # nothing of its own
    assert LOGGER_METHODS == ["close", "flush", "log_metrics", "log_params", "set_tags"]
    assert PROTOCOL_METHODS == [
        "close",
        "delete_artifacts",
        "flush",
        "link_model",
        "log_artifact",
        "log_config",
        "log_dict",
        "log_figure",
        "log_metrics",
        "log_model",
        "log_model_file",
        "log_params",
        "log_splits",
        "log_table",
        "log_text",
        "prune_checkpoints",
        "set_tags",
    ]


def test_the_training_loop_needs_only_the_metric_logger():
    called = {
        node.func.attr
        for path in LOOP_FILES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "tracker"
    }
    assert "log_metrics" in called and called <= set(LOGGER_METHODS), called - set(LOGGER_METHODS)


@pytest.mark.parametrize("cls", [MlflowTracker, NullTracker, InMemoryTracker], ids=lambda c: c.__name__)
def test_every_tracker_implements_the_whole_protocol(cls):
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(Tracker, name))
        actual = inspect.signature(getattr(cls, name))
        assert list(actual.parameters) == list(expected.parameters), (cls.__name__, name)
        defaults = [p.default for p in actual.parameters.values()]
        assert defaults == [p.default for p in expected.parameters.values()], (cls.__name__, name)


def test_null_tracker_does_nothing_and_has_no_catch_all():
    tracker = NullTracker()
    assert isinstance(tracker, Tracker)
    tracker.log_config(Config())
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    tracker.set_tags({"a": 1})
    tracker.log_table(pd.DataFrame({"a": [1]}), "t")
    tracker.flush()
    tracker.close()
    assert not hasattr(NullTracker, "__getattr__")
    with pytest.raises(AttributeError):
        tracker.log_metric({"train/loss": 1.0}, step=1)  # misspelt: an error on every rank, as on rank 0
    with pytest.raises(RuntimeError, match="log no models"):
        tracker.log_model(None, "model", 1)


def test_in_memory_tracker_records_like_mlflow(tmp_path):
    tracker = InMemoryTracker()
    assert isinstance(tracker, Tracker)
    tracker.log_config(Config())
    tracker.log_config(Config(seed=7))  # like MLflow: a param is logged once, the first value stays
    assert tracker.params["seed"] == "42" and tracker.params["train.lr"] == "2e-05"
    assert "config.yaml" in tracker.artifacts
    tracker.log_metrics({"val/accuracy": 0.5}, step=2, model_id="m-1")
    tracker.log_metrics({"val/accuracy": 0.25}, step=1)
    assert tracker.metric("val/accuracy") == [0.25, 0.5] and tracker.metrics["val/accuracy"][0] == (2, 0.5, "m-1")
    frame = pd.DataFrame({"a": [1]})
    tracker.log_table(frame, "tables/x")
    (tmp_path / "state.pt").write_text("s")
    tracker.log_artifact(tmp_path / "state.pt", "checkpoints")
    assert {"tables/x.json", "tables/x.parquet", "checkpoints/state.pt"} <= set(tracker.artifacts)
    ref = tracker.log_model(tmp_path, "model", step=1)
    assert ref.model_id == "m-1" and ref.model_uri == "models:/m-1"
    tracker.close()
    assert tracker.closed
