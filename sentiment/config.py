"""Frozen, typed configuration: the single source of truth for a run.

Presets give whole configs; explicit options override single fields by their flat name
(``train.lr``, ``data.max_length``). Validation collects every problem and reports them together.
The option table (`sentiment.options`) is generated from these dataclasses and their field docstrings:
the `sentiment train` options, the MLproject parameters and the keys of ablation grids.

    python -c "from sentiment.config import build_config; print(build_config('quick'))"
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from sentiment.errors import UserError

TRUNCATIONS = ("head", "head_tail")
PRECISIONS = ("auto", "native", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT_POLICIES = ("best", "all")
PROMOTION_RULES = ("better", "significant", "never", "always")  # sentiment.promote, --promote-if
# `--model` names of the classical baselines (sentiment/baselines.py): scikit-learn pipelines, no encoder to fine-tune.
BASELINES = TFIDF_LOGREG, MINILM_LOGREG = ("tfidf-logreg", "minilm-logreg")
_ENCODER_ONLY = ("freeze_layers", "keep_layers", "keep_heads", "from_scratch", "num_layers", "num_heads", "hidden_size")


@dataclass(frozen=True)
class DataConfig:
    source: str = "imdb"
    """`imdb` (Hub), `sample` (bundled corpus), an `aclImdb/` folder, or a CSV/JSONL/Parquet file."""
    max_length: int = 512
    """Tokens per review after truncation, special tokens included."""
    truncation: str = "head"
    """`head` keeps the first tokens; `head_tail` keeps the first 128 and the last ones."""
    val_fraction: float = 0.25
    """Share of the training source held out for validation (0.25 of IMDB's 25k = 6,250)."""
    test_fraction: float = 0.2
    """Share held out for testing, only for sources without their own test split."""
    train_fraction: float = 1.0
    """Stratified share of the training split actually used (ablations use 0.1)."""
    train_size: int = 0
    """Train on a stratified sample of this many reviews of the training split (0: all)."""
    val_size: int = 0
    """Validate on a stratified sample of this many validation reviews (0: all): cheaper epochs."""
    test_size: int = 0
    """Test on a stratified sample of this many test reviews (0: all); drawn with the split seed,
    so every run with the same split seed is tested on the same reviews (paired comparisons)."""
    split_seed: int = -1
    """Seeds the validation split and the size/fraction samples; -1 uses the run's `seed`. Fix it
    (e.g. 0) so runs with different seeds still share their train, validation and test reviews."""
    train_sample_by_seed: bool = False
    """Draw the `train_size` / `train_fraction` sample with the run's `seed` even when `split_seed`
    is fixed: seeds then see different training reviews (a learning curve's spread over samples)
    while sharing their validation and test reviews. A deterministic model such as TF-IDF + logistic
    regression varies with its sample only."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "distilbert-base-uncased"
    """Hub id, local directory, MLflow model URI, the alias `offline-minilm`, or a baseline:
    `tfidf-logreg` (TF-IDF + logistic regression) or `minilm-logreg` (frozen MiniLM embeddings + logistic
    regression)."""
    dropout: float = 0.3
    """Dropout before the classification layer."""
    freeze_layers: int = 0
    """Freeze the embeddings and the bottom k encoder layers (0 trains everything)."""
    trust_remote_code: bool = False
    """Run Python code shipped with a Hub model (off: only models transformers knows load)."""
    keep_layers: int = 0
    """Keep only the bottom k encoder layers and drop the rest (a true depth ablation; 0 keeps all)."""
    keep_heads: int = 0
    """Keep the k most important attention heads per layer, masking the others (0 keeps all)."""
    from_scratch: bool = False
    """Randomly initialise the encoder from the base model's architecture instead of loading weights."""
    num_layers: int = 0
    """From scratch only: encoder depth (0 = the base model's)."""
    num_heads: int = 0
    """From scratch only: attention heads per layer (0 = the base model's)."""
    hidden_size: int = 0
    """From scratch only: width of the encoder (0 = the base model's); the feed-forward is 4x it."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    """Passes over the training split (more when `min_steps` asks for them)."""
    min_steps: int = 0
    """Train at least this many optimizer steps: a small training split gets as many more epochs
    as that takes (epochs = max(epochs, ceil(min_steps / steps per epoch))); 0 keeps `epochs`."""
    batch_size: int = 16
    """Reviews per optimizer step."""
    lr: float = 2e-5
    """Peak learning rate of the classification head and the top encoder layer."""
    layer_decay: float = 0.95
    """Each layer further down gets lr times this factor once more; 1.0 turns decay off."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (not applied to biases and LayerNorm weights)."""
    warmup_ratio: float = 0.1
    """Share of all optimizer steps spent warming the learning rate up linearly from 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (global L2 norm)."""
    precision: str = "auto"
    """`auto` (bf16 or fp16 on CUDA, fp32 on CPU), `native` (as auto, but bf16 on CPUs that run it
    natively: AVX512-BF16 or AMX), `fp32`, `bf16` or `fp16`."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu` or `cuda`."""
    eval_batch_size: int = 64
    """Reviews per forward pass when validating, testing and predicting."""
    log_every_steps: int = 10
    """Log `train/loss` and `train/lr` every this many optimizer steps."""
    checkpoint_every_steps: int = 0
    """Also save the full training state every this many steps (0: at epoch ends only)."""
    micro_batch_size: int = 0
    """Split each batch into micro-batches of this size with gradient accumulation (0: whole)."""
    compile: bool = False
    """Compile the model with `torch.compile` (dynamic shapes): faster steps after a one-off
    compilation (MiniLM on 2 CPU cores: 30 s for the first batch, 22 s for the second width,
    then none); worth it for long runs, mostly on CUDA."""


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 42
    """Seeds splits, sampling, initialisation and dropout."""
    preset: str = "seed"
    """The preset the config started from (recorded, not used after building)."""
    log_checkpoints: str = "best"
    """`best` logs the best epoch's model; `all` logs every epoch's as a LoggedModel."""
    run_test: bool = True
    """Evaluate the best checkpoint on the test split after training."""
    upload_state: bool = True
    """Upload the resumable state (``state.pt`` and the best epoch) to the run's ``checkpoints/``
    at every checkpoint, so `--resume` works from any machine; false keeps it on local disk."""
    keep_checkpoints: int = 0
    """With `log_checkpoints` all: keep the weights of only the K epoch checkpoints with the best
    validation accuracy; the others stay as tagged records without artifacts (0: keep all)."""
    keep_state: bool = False
    """Keep the uploaded resumable state (``checkpoints/``) after the run finishes successfully
    (by default it is deleted then; the logged model stays)."""


PRESETS: dict[str, dict[str, Any]] = {
    # The reference recipe: DistilBERT on IMDB, 18,750 / 6,250 / 25,000.
    "seed": {},
    # Offline and CPU-sized: the packaged MiniLM encoder on the bundled sample corpus.
    "quick": {
        "data.source": "sample",
        "data.max_length": 256,
        "data.val_fraction": 0.2,
        "data.test_fraction": 0.2,
        "model.name": "offline-minilm",
        "model.dropout": 0.1,
        "train.epochs": 5,
        "train.lr": 1e-4,
        "train.layer_decay": 0.9,
        "train.log_every_steps": 2,
    },
    # Real IMDB on a CPU in about an hour: the packaged MiniLM, one pass over the training split at
    # 256 head+tail tokens, bf16 where the CPU runs it natively. Max length, lr, batch and epochs
    # come from experiments/cpu_search.yaml (validation only; docs/training.md, the CPU recipe).
    "cpu": {
        "data.max_length": 256,
        "data.truncation": "head_tail",
        "data.val_fraction": 0.1,
        "model.name": "offline-minilm",
        "model.dropout": 0.1,
        "train.epochs": 1,
        "train.batch_size": 16,
        "train.lr": 1e-4,
        "train.layer_decay": 0.9,
        "train.precision": "native",
    },
}

_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def flat_fields() -> dict[str, type]:
    """Every settable flat name (``train.lr``, ``seed``) with its Python type."""
    out: dict[str, type] = {}
    for section, cls in _SECTIONS.items():
        hints = get_type_hints(cls)
        out.update({f"{section}.{f.name}": hints[f.name] for f in fields(cls)})
    hints = get_type_hints(Config)
    out.update({f.name: hints[f.name] for f in fields(Config) if f.name not in _SECTIONS})
    return out


def to_flat_dict(config: Config) -> dict[str, Any]:
    """Flatten to ``{"data.source": ..., "seed": ...}``: what gets logged as params."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


def from_dict(nested: dict[str, Any]) -> Config:
    """Rebuild a config from ``dataclasses.asdict`` output (e.g. a logged config.yaml)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return apply_overrides(Config(), flat)


def from_yaml(text: str) -> Config:
    return from_dict(yaml.safe_load(text) or {})


def _coerce(name: str, value: Any, kind: type, problems: list[str]) -> Any:
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        elif isinstance(value, bool):
            return value
        problems.append(f"{name} must be true or false, got {value!r}")
        return value
    if kind in (int, float) and not isinstance(value, bool):
        try:
            number = kind(value) if kind is float else int(str(value))
            return number
        except (TypeError, ValueError):
            problems.append(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
            return value
    if kind is str:
        return str(value)
    problems.append(f"{name} has unsupported value {value!r}")
    return value


def apply_overrides(base: Config, overrides: dict[str, Any]) -> Config:
    """Return ``base`` with flat-named fields replaced; values are coerced to each field's type.

    Raises:
        UserError: an unknown name or a value of the wrong type (all problems in one message).
    """
    known = flat_fields()
    problems: list[str] = []
    sections: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    top: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in known:
            problems.append(f"unknown option {name!r} (known: {', '.join(sorted(known))})")
            continue
        value = _coerce(name, value, known[name], problems)
        if "." in name:
            section, key = name.split(".", 1)
            sections[section][key] = value
        else:
            top[name] = value
    if problems:
        raise UserError("; ".join(problems))
    return replace(
        base,
        **{s: replace(getattr(base, s), **v) for s, v in sections.items() if v},
        **top,
    )


# long function: a flat list of independent one-line field checks, collected into one UserError
def validate(config: Config) -> Config:
    """Check every field; raise one UserError listing all problems, or return the config."""
    d, m, t = config.data, config.model, config.train
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(bool(d.source.strip()), "data.source must not be empty (try --data sample)")
    check(8 <= d.max_length <= 4096, f"data.max_length must be between 8 and the model's limit, got {d.max_length}")
    check(d.truncation in TRUNCATIONS, f"data.truncation must be one of {', '.join(TRUNCATIONS)}, got {d.truncation!r}")
    for name in ("val_fraction", "test_fraction", "train_fraction"):
        value = getattr(d, name)
        check(0 < value <= 1, f"data.{name} must be in (0, 1], got {value}")
    for name in ("train_size", "val_size", "test_size"):
        value = getattr(d, name)
        check(value == 0 or value >= 4, f"data.{name} must be 0 (all) or at least 4 reviews, got {value}")
    check(d.split_seed >= -1, f"data.split_seed must be -1 (the run's seed) or >= 0, got {d.split_seed}")
    check(d.val_fraction + d.test_fraction < 1, "data.val_fraction + data.test_fraction must be < 1")
    check(bool(m.name.strip()), "model.name must not be empty (try --model offline-minilm)")
    check(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    check(m.freeze_layers >= 0, f"model.freeze_layers must be >= 0, got {m.freeze_layers}")
    for name in ("keep_layers", "keep_heads", "num_layers", "num_heads", "hidden_size"):
        check(getattr(m, name) >= 0, f"model.{name} must be >= 0 (0 = the base model's), got {getattr(m, name)}")
    shape = [name for name in ("num_layers", "num_heads", "hidden_size") if getattr(m, name)]
    check(
        m.from_scratch or not shape,
        f"model.{', model.'.join(shape)} only apply with model.from_scratch true; to shrink a pretrained encoder use "
        "keep_layers or keep_heads",
    )
    check(
        not (m.from_scratch and (m.keep_layers or m.keep_heads)),
        "model.keep_layers and model.keep_heads prune a pretrained encoder; with model.from_scratch use num_layers and "
        "num_heads",
    )
    shaped = [name for name in _ENCODER_ONLY if getattr(m, name)]
    check(
        m.name not in BASELINES or not shaped,
        f"model.{', model.'.join(shaped)} reshape an encoder; the {m.name} baseline fine-tunes none",
    )
    if m.num_heads and m.hidden_size:
        check(
            m.hidden_size % m.num_heads == 0,
            f"model.hidden_size {m.hidden_size} must be a multiple of model.num_heads {m.num_heads}",
        )
    check(t.epochs > 0, f"train.epochs must be > 0, got {t.epochs}")
    check(t.batch_size > 0, f"train.batch_size must be > 0, got {t.batch_size}")
    check(t.eval_batch_size > 0, f"train.eval_batch_size must be > 0, got {t.eval_batch_size}")
    check(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    check(0 < t.layer_decay <= 1, f"train.layer_decay must be in (0, 1], got {t.layer_decay}")
    check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    check(0 <= t.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    check(t.max_grad_norm > 0, f"train.max_grad_norm must be > 0, got {t.max_grad_norm}")
    check(t.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    check(t.device in DEVICES, f"train.device must be one of {', '.join(DEVICES)}, got {t.device!r}")
    check(t.log_every_steps > 0, f"train.log_every_steps must be > 0, got {t.log_every_steps}")
    check(t.min_steps >= 0, f"train.min_steps must be >= 0, got {t.min_steps}")
    check(t.checkpoint_every_steps >= 0, f"train.checkpoint_every_steps must be >= 0, got {t.checkpoint_every_steps}")
    check(t.micro_batch_size >= 0, f"train.micro_batch_size must be >= 0, got {t.micro_batch_size}")
    check(isinstance(t.compile, bool), f"train.compile must be true or false, got {t.compile!r}")
    problems += _top_level_problems(config)
    if problems:
        raise UserError("invalid configuration: " + "; ".join(problems))
    return config


def _top_level_problems(config: Config) -> list[str]:
    """What is wrong with the fields outside the data/model/train sections."""
    rules = [
        (config.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {config.preset!r}"),
        (
            config.log_checkpoints in CHECKPOINT_POLICIES,
            f"log_checkpoints must be one of {', '.join(CHECKPOINT_POLICIES)}, got {config.log_checkpoints!r}",
        ),
        (config.keep_checkpoints >= 0, f"keep_checkpoints must be >= 0 (0 keeps all), got {config.keep_checkpoints}"),
        (
            config.keep_checkpoints == 0 or config.log_checkpoints == "all",
            "keep_checkpoints needs log_checkpoints all (only then is there more than the best model to keep)",
        ),
    ]
    return [message for ok, message in rules if not ok]


def build_config(preset: str = "seed", overrides: dict[str, Any] | None = None) -> Config:
    """Start from a preset, apply explicit overrides, validate.

    Args:
        preset: a key of PRESETS.
        overrides: flat name -> value; None values mean "keep the preset's".
    Returns:
        The validated, frozen config.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    config = apply_overrides(Config(preset=preset), PRESETS[preset])
    return validate(apply_overrides(config, overrides or {}))


# ----------------------------------------------------------------------------- run names


def short_name(source: str) -> str:
    """A model or data source in a run name: offline-minilm -> minilm, distilbert-base-uncased ->
    distilbert, models:/imdb@champion -> imdb, /data/reviews.csv -> reviews."""
    if source.startswith("models:/"):
        source = source[len("models:/") :].split("@")[0].split("/")[0]
    elif source.startswith("runs:/"):
        source = "run-" + source[len("runs:/") :][:6]
    name = Path(source.rstrip("/")).stem if "/" in source or "." in source else source
    name = re.sub(r"-(base|uncased|cased)(?=-|$)", "", name.lower().removeprefix("offline-"))
    return re.sub(r"[^a-z0-9.-]+", "-", name).strip("-")[:24] or "model"


def scale_epochs(config: Config, train_reviews: int) -> Config:
    """``config`` with as many epochs as `train.min_steps` needs on ``train_reviews`` reviews
    (unchanged when it already trains that long, or without ``min_steps``)."""
    t = config.train
    steps_per_epoch = max(1, math.ceil(train_reviews / t.batch_size))
    epochs = max(t.epochs, math.ceil(t.min_steps / steps_per_epoch))
    return config if epochs == t.epochs else dataclasses.replace(config, train=dataclasses.replace(t, epochs=epochs))


def default_run_name(*parts: str) -> str:
    """``cpu-minilm-imdb-3f2a``: what ran on what, and a short random suffix to tell runs apart."""
    return "-".join([*(p for p in parts if p), secrets.token_hex(2)])
