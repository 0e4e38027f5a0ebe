"""Attention maps: for a few selected reviews, attention from the classification token in the
last layer (mean over heads), per layer, and attention rollout (Abnar & Zuidema, 2020), with a
figure, an HTML page and the weights as JSON per review.

    sentiment analyze --model-uri models:/imdb-sentiment@champion --only attention
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from sentiment import data as data_mod
from sentiment import model as model_mod
from sentiment import plots, tokens
from sentiment.analyze.render import attention_html, excerpt
from sentiment.config import Config
from sentiment.errors import UserError

# Reviews picked from the predictions table for attention maps, in this order.
GROUPS = ("correct_positive", "correct_negative", "false_positive", "false_negative", "least_confident")
MAX_PLOT_TOKENS = 64  # tokens shown per attention figure; longer reviews show the most attended ones


@dataclass(frozen=True)
class AttentionMap:
    """Attention of one review as the model saw it (after truncation).

    ``positions[j]`` is the index of token j among the review's content tokens (-1 for special
    tokens) and ``spans[j]`` its characters in ``text``; together they keep word boundaries and
    show where truncation cut the review.
    """

    text: str
    tokens: list[str]  # display labels: the token's characters, "##" when it continues a word
    spans: list[tuple[int, int] | None]
    positions: list[int]
    content_tokens: int  # content tokens before truncation
    attentions: np.ndarray  # (L, H, T, T), each row a distribution over the T tokens
    probability: float  # P(positive), with the model's temperature (as the predictions table's)
    cls_index: int = 0  # BERT, DistilBERT and RoBERTa classify from the first token

    @property
    def last_layer(self) -> np.ndarray:
        """(T,) attention from the classification token in the last layer, mean over heads."""
        return self.attentions[-1].mean(0)[self.cls_index]

    @property
    def per_layer(self) -> np.ndarray:
        """(L, T) attention from the classification token per layer, mean over heads."""
        return self.attentions.mean(1)[:, self.cls_index, :]

    @cached_property
    def rollout(self) -> np.ndarray:
        """(L, T) attention rollout from the classification token after each layer."""
        return attention_rollout(self.attentions)[:, self.cls_index, :]

    @property
    def truncated(self) -> bool:
        return self.content_tokens > sum(p >= 0 for p in self.positions)

    @property
    def full_length(self) -> int:
        """Tokens before truncation, special tokens included (the table's n_tokens)."""
        return self.content_tokens + sum(p < 0 for p in self.positions)


def attention_rollout(attentions: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) after each layer.

    Each layer's head-mean attention is mixed with the identity for the residual path,
    ``A' = residual * I + (1 - residual) * A``, renormalised, and multiplied from the bottom up.

    Args:
        attentions: (L, H, T, T) with rows summing to 1.
    Returns:
        (L, T, T): entry l is the rollout through layers 1..l; every row sums to 1.
    """
    layers, _, length, _ = attentions.shape
    eye = np.eye(length)
    out = np.empty((layers, length, length))
    current = eye
    for layer in range(layers):
        mixed = residual * eye + (1 - residual) * attentions[layer].mean(0)
        mixed /= mixed.sum(-1, keepdims=True)
        current = mixed @ current
        out[layer] = current
    return out


def use_eager_attention(model) -> None:
    """Switch to eager attention: SDPA and flash kernels do not return attention weights."""
    if getattr(model.config, "_attn_implementation", "eager") != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")


@torch.no_grad()
def extract_attention(model, tokenizer, text: str, max_length: int, truncation: str = "head") -> AttentionMap:
    """One forward pass with attention weights, on the model's device, in fp32.

    Returns:
        The AttentionMap of ``text`` (cleaned as training data is) truncated as in training.
    """
    text = data_mod.clean_text(text)
    enc = tokens.encode_with_spans(text, tokenizer, max_length, truncation)
    use_eager_attention(model)
    model.eval()
    device = next(model.parameters()).device
    input_ids = torch.tensor([enc.ids], dtype=torch.long, device=device)  # (1, T)
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_attentions=True)
    depth = len(model_mod.encoder_layers(model))
    if not out.attentions or len(out.attentions) != depth:
        raise UserError(
            f"model {type(model).__name__} returned no attention weights; it needs attn_implementation='eager'"
        )
    attentions = torch.stack([a[0].float() for a in out.attentions]).cpu().numpy()  # (L, H, T, T)
    logits = out.logits[0].double()  # P(positive) as served: the model's temperature applied
    probability = float(torch.sigmoid((logits[1] - logits[0]) / model_mod.temperature_of(model)))
    return AttentionMap(text, enc.tokens, enc.spans, enc.positions, enc.content_tokens, attentions, probability)


def select_examples(table: pd.DataFrame, per_group: int = 1) -> pd.DataFrame:
    """Reviews worth a look: the most confident correct of each class, the most confident false
    positives and negatives, and the least confident; each review at most once.

    Returns:
        Rows of ``table`` with a ``group`` column, in GROUPS order.
    """
    correct = table["label"] == table["prediction"]
    masks = {
        "correct_positive": correct & (table["label"] == 1),
        "correct_negative": correct & (table["label"] == 0),
        "false_positive": ~correct & (table["prediction"] == 1),
        "false_negative": ~correct & (table["prediction"] == 0),
        "least_confident": pd.Series(True, index=table.index),
    }
    chosen: list[pd.DataFrame] = []
    taken: set = set()
    for group in GROUPS:
        pool = table[masks[group] & ~table.index.isin(taken)]
        rows = pool.sort_values("confidence", ascending=group == "least_confident", kind="stable").head(per_group)
        taken.update(rows.index)
        chosen.append(rows.assign(group=group))
    return pd.concat(chosen)


def display_columns(amap: AttentionMap, limit: int = MAX_PLOT_TOKENS) -> np.ndarray:
    """All tokens of a short review; of a long one the ``limit`` most attended (last layer or
    rollout), in reading order."""
    length = len(amap.tokens)
    if length <= limit:
        return np.arange(length)
    content = np.array([p >= 0 for p in amap.positions])
    last, rollout = amap.last_layer, amap.rollout[-1]
    # Relative to the largest word weight; special tokens ([CLS] keeps much rollout) rank first.
    score = np.maximum(last / last[content].max(), rollout / rollout[content].max())
    return np.sort(np.argsort(-score, kind="stable")[:limit])


def attention_examples(table: pd.DataFrame | None, texts: Sequence[str], per_group: int) -> list[dict]:
    """What to draw: selected predictions-table rows, then the user's texts (no label)."""
    examples = []
    if table is not None:
        for row in select_examples(table, per_group).itertuples():
            examples.append(
                {
                    "group": row.group,
                    "id": str(row.id),
                    "text": row.text,
                    "label": int(row.label),
                    "table_probability": float(row.probability),
                }
            )
    for i, text in enumerate(texts, start=1):
        examples.append({"group": "user", "id": f"user-{i}", "text": text, "label": None, "table_probability": None})
    return examples


def log_attention(model, tokenizer, examples: list[dict], config: Config, tracker) -> pd.DataFrame:
    """A figure, an HTML page and a JSON of weights per example; returns the examples table."""
    rows = []
    for i, ex in enumerate(examples, start=1):
        amap = extract_attention(model, tokenizer, ex["text"], config.data.max_length, config.data.truncation)
        name = f"attention/{i:02d}_{ex['group']}"
        rows.append(_log_attention_page(amap, ex, name, tracker))
    table = pd.DataFrame(rows)
    if len(table):
        tracker.log_table(table, "attention/examples")
    return table


def _log_attention_page(amap: AttentionMap, ex: dict, name: str, tracker) -> dict:
    predicted = data_mod.LABELS[int(amap.probability >= 0.5)]
    truth = "unknown" if ex["label"] is None else data_mod.LABELS[ex["label"]]
    what = (
        f"your text {ex['id'].split('-')[-1]}"
        if ex["label"] is None
        else f"{ex['group'].replace('_', ' ')}: review {ex['id']}"
    )
    title = f"{what} (true {truth}, predicted {predicted}, P(positive) = {amap.probability:.3f})"
    cols = display_columns(amap)
    note = (
        ""
        if len(cols) == len(amap.tokens)
        else f"{len(cols)} of {len(amap.tokens)} tokens: the most attended, in reading order"
    )
    figure = plots.token_attention(
        [amap.tokens[c] for c in cols],
        amap.last_layer[cols],
        amap.per_layer[:, cols],
        amap.rollout[:, cols],
        title,
        note,
    )
    tracker.log_figure(figure, f"{name}.png")
    facts = {
        "review": ex["id"],
        "true label": truth,
        "predicted": predicted,
        "P(positive)": f"{amap.probability:.4f}"
        + ("" if ex["table_probability"] is None else f" (predictions table: {ex['table_probability']:.4f})"),
        "tokens seen": f"{len(amap.tokens):,} of {amap.full_length:,}" + (" (truncated)" if amap.truncated else ""),
        "layers x heads": f"{amap.attentions.shape[0]} x {amap.attentions.shape[1]}",
    }
    tracker.log_text(attention_html(amap, title, facts), f"{name}.html")
    weights = {
        "tokens": amap.tokens,
        "last_layer": amap.last_layer.tolist(),
        "rollout": amap.rollout[-1].tolist(),
        "per_layer": amap.per_layer.tolist(),
    }
    tracker.log_dict(weights, f"{name}.json")
    content = [j for j, p in enumerate(amap.positions) if p >= 0]
    top = sorted(content, key=lambda j: -amap.last_layer[j])[:5]
    return {
        "page": f"{name}.html",
        "group": ex["group"],
        "id": ex["id"],
        "label": truth,
        "prediction": predicted,
        "probability": amap.probability,
        "tokens": len(amap.tokens),
        "truncated": amap.truncated,
        "top_tokens": ", ".join(amap.tokens[j] for j in top),
        "excerpt": excerpt(amap.text),
    }
