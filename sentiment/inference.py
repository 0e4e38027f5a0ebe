"""An encoder's answer for reviews: logits (N, 2) for encoded reviews, batched longest first, and
the logit margin the predictions table keeps (z_positive - z_negative). Used by every path that
runs an encoder: evaluation (evaluate.py), the served model, scoring files and combined models.

    from sentiment.inference import encoder_logits
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import expit

from sentiment import data as data_mod
from sentiment import device as device_mod
from sentiment import model as model_mod
from sentiment import tokens


@torch.no_grad()
def predict_logits(model, encoded: tokens.Encoded, device, batch_size: int, precision, pad_id: int) -> np.ndarray:
    """Logits (N, 2) in the input order; batches sorted by length so padding stays small."""
    model.eval()
    collate = data_mod.make_collate(pad_id)
    out = np.empty((len(encoded.input_ids), 2), dtype=np.float32)
    for batch_index in data_mod.sorted_batches(encoded.lengths, batch_size):
        batch = collate([(encoded.input_ids[i], -1) for i in batch_index])
        with precision.autocast(device):
            logits = model(
                input_ids=batch["input_ids"].to(device, non_blocking=True),
                attention_mask=batch["attention_mask"].to(device, non_blocking=True),
            ).logits
        out[batch_index] = logits.float().cpu().numpy()
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def logit_margin(logits: np.ndarray) -> np.ndarray:
    """(N, 2) logits -> (N,) z_positive - z_negative in float64: sigmoid of it is softmax's P(positive)."""
    return logits[:, 1].astype(np.float64) - logits[:, 0].astype(np.float64)


def encoder_logits(
    model, tokenizer, texts: list[str], max_length: int, truncation: str, batch_size: int = 32
) -> tuple[np.ndarray, tokens.Encoded]:
    """The logit margin (N,) before temperature scaling per text, on the model's current device,
    each text cleaned and truncated as in training, plus the encoding used."""
    device = next(model.parameters()).device
    precision = device_mod.pick_precision("auto", device)
    encoded = tokens.encode([data_mod.clean_text(t) for t in texts], tokenizer, max_length, truncation)
    logits = predict_logits(model, encoded, device, batch_size, precision, tokenizer.pad_token_id)
    return logit_margin(logits), encoded


def predict_probabilities(
    model, tokenizer, texts: list[str], max_length: int, truncation: str, batch_size: int = 32
) -> tuple[np.ndarray, tokens.Encoded]:
    """P(positive) per text with the model's temperature applied, on its current device, plus the
    encoding used."""
    margin, encoded = encoder_logits(model, tokenizer, texts, max_length, truncation, batch_size)
    return expit(margin / model_mod.temperature_of(model)), encoded
