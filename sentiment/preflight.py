"""Checks before a run exists: a mistake that can be known up front ends `sentiment train`
before MLflow holds a run for it, and quickly (this module imports neither torch nor MLflow
until a check needs them).

- the model source resolves: `offline-minilm`, a local folder with config.json, an MLflow model
  URI that exists (downloaded, as training needs it anyway), a Hub id the Hub or the local cache
  has (hub.py: one short probe); a classical baseline (`tfidf-logreg`, `minilm-logreg`) has no
  weights to find (minilm-logreg's frozen `offline-minilm` is checked);
- the options that need the model's shape fit its config, read without loading weights:
  max_length against its positions, keep_layers / freeze_layers against its depth, keep_heads
  against its heads, from-scratch sizes (model.check_shape);
- the data loads and splits: readable, the text and label columns, two classes, no empty text,
  the sizes asked for (data.load_splits);
- the precision suits the device (fp16 / bf16 need a GPU or a CPU that has it).

What can only fail later (out of memory, a non-finite loss) still ends the run FAILED with
its reason. evaluate and analyze plan the same way (evaluate.plan_evaluate,
analyze.plan_analyze); ablate and tune check every child and trial with `check_configs`.

    python -c "from sentiment.config import build_config; from sentiment.preflight import check_inputs; \
print(check_inputs(build_config('quick', {})).splits.sizes())"
"""

from __future__ import annotations

from dataclasses import dataclass

from sentiment import data as data_mod
from sentiment import model as model_mod
from sentiment.config import BASELINES, MINILM_LOGREG, Config


@dataclass(frozen=True)
class TrainInputs:
    """What `check_inputs` found before the run exists (`train.prepare` takes them as they are)."""

    model_source: str  # where from_pretrained finds the encoder (an MLflow model URI downloaded)
    splits: data_mod.Splits


def _model_source(name: str) -> str:
    """An MLflow model URI becomes its downloaded folder (needs MLflow); a name stays as it is and
    resolves in model.resolve_source (alias, folder, Hub id)."""
    if ":/" not in name:
        return name
    from sentiment import tracking

    return tracking.resolve_model_source(name)


def check_model(config: Config) -> str:
    """The model source resolves and the options that need its shape fit it; returns the source.
    A classical baseline (`config.BASELINES`) has no encoder to check, except minilm-logreg's
    frozen one (its position limit against max_length)."""
    name = config.model.name
    if name in BASELINES:
        if name == MINILM_LOGREG:  # its frozen encoder
            model_mod.check_max_length(
                model_mod.source_config(model_mod.OFFLINE_MINILM), config.data.max_length, model_mod.OFFLINE_MINILM
            )
        return name
    model_source, hf_config = _read_shape(config)
    model_mod.check_shape(config.model, hf_config, config.data.max_length)
    return model_source


def _read_shape(config: Config) -> tuple[str, object]:
    """The model's source and its Hugging Face config (no weights loaded)."""
    model_source = _model_source(config.model.name)
    return model_source, model_mod.source_config(model_source, config.model.trust_remote_code)


def check_inputs(config: Config, dist=None) -> TrainInputs:
    """Every check above, cheapest first; returns the model source and the loaded splits.

    Raises:
        UserError: the first problem, in one line that says how to fix it.
    """
    model_source = check_model(config)
    splits = data_mod.load_splits(config.data, config.seed)
    from sentiment.device import pick_runtime  # (imports torch)

    pick_runtime(config.train, dist)
    return TrainInputs(model_source, splits)


def check_configs(configs) -> None:
    """The checks of `check_inputs` for the many configs of a grid's children or a search's trials, before
    the parent run exists: each model resolves and fits its options (one shape read per model, no
    weights loaded), each device and precision suits, each distinct data setting loads and splits. A
    grid or search that would fail in a child fails here instead, with the same one-line message."""
    from sentiment.device import pick_runtime  # (imports torch)

    shapes: dict[tuple[str, bool], object] = {}
    loaded: set = set()
    for config in configs:
        if config.model.name in BASELINES:  # a classical baseline: no encoder shape to read
            check_model(config)
        else:
            key = (config.model.name, config.model.trust_remote_code)
            if key not in shapes:
                shapes[key] = _read_shape(config)[1]
            model_mod.check_shape(config.model, shapes[key], config.data.max_length)
        pick_runtime(config.train)
        if config.data not in loaded:
            data_mod.load_splits(config.data, config.seed)
            loaded.add(config.data)
