"""Data exploration, attention maps and failure analysis, logged to one MLflow run.

Every failure number comes from ONE predictions table (the one `evaluate` logs, or one predicted
the same way), so the failure counts equal the confusion matrix by construction. Attention is
computed only for a handful of selected reviews; exploration counts tokens a chunk at a time, so
IMDB's 50k reviews never sit in memory tokenized.

    sentiment analyze --model-uri models:/imdb-sentiment@champion --data imdb
    sentiment analyze --data sample --only eda
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sentiment import data as data_mod
from sentiment import device as device_mod
from sentiment import tokens as tokens_mod
from sentiment import evaluate
from sentiment import model as model_mod
from sentiment import plots
from sentiment.config import Config, ModelConfig, apply_overrides, validate
from sentiment.errors import UserError

PARTS = ("eda", "attention", "failures")
# Reviews picked from the predictions table for attention maps, in this order.
GROUPS = ("correct_positive", "correct_negative", "false_positive", "false_negative", "least_confident")
PREDICTION_COLUMNS = ("id", "text", "label", "prediction", "probability", "confidence", "n_tokens", "truncated")
MAX_USER_TEXTS = 50  # each --texts review costs one forward pass and three artifacts
MAX_PLOT_TOKENS = 64  # tokens shown per attention figure; longer reviews show the most attended ones
TOP_ERRORS = 20
EXCERPT_CHARS = 300
NEGATION = re.compile(
    r"\b(?:not|no|never|nothing|nobody|none|neither|nor|nowhere|cannot|without|hardly|barely)\b|n't\b", re.IGNORECASE
)
CONTRAST = re.compile(
    r"\b(?:but|however|although|though|yet|despite|nevertheless|nonetheless|whereas|instead)\b|\bon the other hand\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


# ----------------------------------------------------------------------------- inputs


def parse_parts(only: str) -> tuple[str, ...]:
    """``eda,failures`` -> ("eda", "failures"); empty means every part."""
    if not only.strip():
        return PARTS
    asked = [p.strip().lower() for p in only.split(",") if p.strip()]
    unknown = [p for p in asked if p not in PARTS]
    if unknown:
        raise UserError(f"--only takes a comma-separated subset of {', '.join(PARTS)}; unknown: {', '.join(unknown)}")
    return tuple(p for p in PARTS if p in asked)


def read_texts(path: str) -> list[str]:
    """Reviews for attention maps from a UTF-8 text file, one per line (blank lines skipped)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"--texts file {path!r} does not exist or is not a file; pass a text file with one review per line")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --texts file {path!r} ({' '.join(str(exc).split())[:200]}); use UTF-8 text, one review per line") from None
    texts = [t for t in (data_mod.clean_text(line) for line in lines) if t]
    if not texts:
        raise UserError(f"--texts file {path!r} has no reviews; write one review per line")
    if len(texts) > MAX_USER_TEXTS:
        raise UserError(f"--texts file {path!r} has {len(texts)} reviews; attention maps are for at most {MAX_USER_TEXTS}")
    return texts


# ----------------------------------------------------------------------------- exploration


@dataclass(frozen=True)
class SplitLengths:
    """Per review of one split: label, whitespace words, and tokens before truncation."""

    labels: np.ndarray
    words: np.ndarray
    tokens: np.ndarray  # special tokens included, as tokens.encode's full_lengths


@dataclass(frozen=True)
class Exploration:
    splits: dict[str, SplitLengths]
    max_length: int
    vocabulary_size: int  # distinct lower-cased words over all splits
    unk_share: float  # share of content tokens the tokenizer maps to its unknown token
    tokenizer: dict = field(default_factory=dict)  # facts: name, vocabulary size, special tokens, example

    def summary_rows(self) -> list[dict]:
        """One row per split plus ``all``: the numbers behind every `eda/` metric and figure."""
        parts = dict(self.splits)
        parts["all"] = SplitLengths(*(np.concatenate([getattr(s, f) for s in self.splits.values()]) for f in ("labels", "words", "tokens")))
        rows = []
        for name, s in parts.items():
            rows.append(
                {
                    "split": name,
                    "examples": int(len(s.labels)),
                    "negative": int((s.labels == 0).sum()),
                    "positive": int((s.labels == 1).sum()),
                    "positive_share": float(s.labels.mean()),
                    "words_mean": float(s.words.mean()),
                    "words_median": float(np.median(s.words)),
                    "words_max": int(s.words.max()),
                    "tokens_mean": float(s.tokens.mean()),
                    "tokens_median": float(np.median(s.tokens)),
                    "tokens_p95": float(np.percentile(s.tokens, 95)),
                    "tokens_max": int(s.tokens.max()),
                    "truncated_share": float((s.tokens > self.max_length).mean()),
                }
            )
        return rows

    def metrics(self) -> dict[str, float]:
        out = {f"eda/{row['split']}/{k}": float(v) for row in self.summary_rows() for k, v in row.items() if k != "split"}
        out.update(
            {
                "eda/vocabulary_size": float(self.vocabulary_size),
                "eda/tokenizer_vocab_size": float(self.tokenizer.get("vocab_size", 0)),
                "eda/unk_share": self.unk_share,
                "eda/max_length": float(self.max_length),
            }
        )
        return out


def tokenizer_facts(tokenizer, name: str, example: str, words: int = 25) -> dict:
    """Vocabulary size, special tokens and how the first words of ``example`` are split."""
    snippet = " ".join(example.split()[:words])
    ids = tokenizer(snippet)["input_ids"]
    return {
        "name": name,
        "class": type(tokenizer).__name__,
        "vocab_size": int(len(tokenizer)),
        "model_max_length": int(min(tokenizer.model_max_length, 10**9)),
        "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "special_token_ids": {str(t): int(i) for t, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids)},
        "example_text": snippet,
        "example_tokens": tokenizer.convert_ids_to_tokens(ids),
        "example_ids": [int(i) for i in ids],
    }


def explore(splits: data_mod.Splits, tokenizer, max_length: int, tokenizer_name: str = "") -> Exploration:
    """Class balance, word and token counts per split, vocabulary and tokenizer facts."""
    lengths: dict[str, SplitLengths] = {}
    vocabulary: set[str] = set()
    total = unknown = 0
    for name in ("train", "val", "test"):
        frame = getattr(splits, name)
        texts = frame["text"].tolist()
        tokens, n_tokens, n_unknown = tokens_mod.count_tokens(texts, tokenizer)
        total, unknown = total + n_tokens, unknown + n_unknown
        for text in texts:
            vocabulary.update(_WORD.findall(text.lower()))
        words = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
        lengths[name] = SplitLengths(labels=frame["label"].to_numpy().astype(int), words=words, tokens=tokens)
    example = splits.train["text"].iloc[0] if len(splits.train) else "A moving, beautifully acted film."
    return Exploration(
        splits=lengths,
        max_length=max_length,
        vocabulary_size=len(vocabulary),
        unk_share=unknown / max(total, 1),
        tokenizer=tokenizer_facts(tokenizer, tokenizer_name or getattr(tokenizer, "name_or_path", ""), example),
    )


def log_exploration(eda: Exploration, tracker) -> None:
    rows = eda.summary_rows()
    tracker.log_metrics(eda.metrics(), step=0)
    tracker.log_table(pd.DataFrame(rows), "eda/summary")
    tracker.log_dict({"max_length": eda.max_length, "vocabulary_size": eda.vocabulary_size, "unk_share": eda.unk_share, "splits": rows, "tokenizer": eda.tokenizer}, "eda/exploration.json")
    counts = {r["split"]: (r["negative"], r["positive"]) for r in rows if r["split"] != "all"}
    words = {name: s.words for name, s in eda.splits.items()}
    tokens = {name: s.tokens for name, s in eda.splits.items()}
    truncated = {r["split"]: r["truncated_share"] for r in rows if r["split"] != "all"}
    tracker.log_figure(plots.class_balance(counts), "eda/class_balance.png")
    tracker.log_figure(plots.length_histograms(words, tokens, eda.max_length, truncated), "eda/length_histograms.png")
    tracker.log_figure(plots.length_boxplot(words, tokens, eda.max_length), "eda/length_boxplot.png")


# ----------------------------------------------------------------------------- attention


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
    probability: float  # P(positive)
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
    enc = tokens_mod.encode_with_spans(text, tokenizer, max_length, truncation)
    use_eager_attention(model)
    model.eval()
    device = next(model.parameters()).device
    input_ids = torch.tensor([enc.ids], dtype=torch.long, device=device)  # (1, T)
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_attentions=True)
    depth = len(model_mod.encoder_layers(model))
    if not out.attentions or len(out.attentions) != depth:
        raise UserError(f"model {type(model).__name__} returned no attention weights; it needs attn_implementation='eager'")
    attentions = torch.stack([a[0].float() for a in out.attentions]).cpu().numpy()  # (L, H, T, T)
    probability = float(torch.softmax(out.logits.float(), dim=-1)[0, 1])
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


def attention_html(amap: AttentionMap, title: str, facts: dict[str, str]) -> str:
    """A self-contained page: the review twice, word pieces shaded by last-layer attention and by
    rollout; what truncation removed is greyed out; hover a piece for its weight."""
    sections = []
    for name, weights in (("Last layer: attention from the classification token (mean over heads)", amap.last_layer), ("Attention rollout through all layers", amap.rollout[-1])):
        sections.append(f"<h2>{html.escape(name)}</h2><p class='review'>{_highlighted(amap, weights)}</p>")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{rows}</table>"
        "<p class='note'>Shading: the weight divided by the largest weight of a word piece in the review (white = 0). "
        "Word pieces of one word stay joined; hover a piece for its token and weight.</p>"
        f"{''.join(sections)}</body></html>"
    )


_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.9;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1rem}th,td{text-align:left;padding:.1rem .8rem;border-bottom:1px solid #ddd}"
    ".review span.t{border-radius:3px;padding:.1rem 0}.special{font-size:.75em;color:#555;border:1px solid #aaa;border-radius:3px;padding:0 .2rem;margin:0 .2rem}"
    ".cut{color:#999}.note{color:#555;font-size:.9em}"
)


def _highlighted(amap: AttentionMap, weights: np.ndarray) -> str:
    content = [j for j, p in enumerate(amap.positions) if p >= 0]
    # Scale by the review's words: [CLS] keeps much of the rollout through the residual path.
    scale = float(weights[content].max() if content else weights.max()) or 1.0

    def shade(j: int, inner: str, css: str) -> str:
        tip = html.escape(f"#{j} {amap.tokens[j]}: {weights[j]:.4f}", quote=True)
        return f"<span class='{css}' title='{tip}' style='background:rgba(230,85,13,{min(weights[j] / scale, 1.0):.3f})'>{inner}</span>"

    first = content[0] if content else len(amap.tokens)
    last = content[-1] if content else len(amap.tokens) - 1
    out = [shade(j, html.escape(amap.tokens[j]), "special") for j in range(first)]
    prev_end = 0
    for k, j in enumerate(content):
        start, end = amap.spans[j]
        gap = html.escape(amap.text[prev_end:start])
        cut = k > 0 and amap.positions[j] != amap.positions[content[k - 1]] + 1  # head_tail cut the middle
        out.append(f"<span class='cut' title='not seen by the model'>{gap}</span>" if cut else gap)
        out.append(shade(j, html.escape(amap.text[start:end]), "t"))
        prev_end = end
    tail = html.escape(amap.text[prev_end:])
    out.append(f"<span class='cut' title='not seen by the model'>{tail}</span>" if amap.truncated and tail.strip() else tail)
    out += [shade(j, html.escape(amap.tokens[j]), "special") for j in range(last + 1, len(amap.tokens))]
    return "".join(out)


def attention_examples(table: pd.DataFrame | None, texts: Sequence[str], per_group: int) -> list[dict]:
    """What to draw: selected predictions-table rows, then the user's texts (no label)."""
    examples = []
    if table is not None:
        for row in select_examples(table, per_group).itertuples():
            examples.append({"group": row.group, "id": str(row.id), "text": row.text, "label": int(row.label), "table_probability": float(row.probability)})
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
    what = f"your text {ex['id'].split('-')[-1]}" if ex["label"] is None else f"{ex['group'].replace('_', ' ')}: review {ex['id']}"
    title = f"{what} (true {truth}, predicted {predicted}, P(positive) = {amap.probability:.3f})"
    cols = display_columns(amap)
    note = "" if len(cols) == len(amap.tokens) else f"{len(cols)} of {len(amap.tokens)} tokens: the most attended, in reading order"
    figure = plots.token_attention([amap.tokens[c] for c in cols], amap.last_layer[cols], amap.per_layer[:, cols], amap.rollout[:, cols], title, note)
    tracker.log_figure(figure, f"{name}.png")
    facts = {
        "review": ex["id"],
        "true label": truth,
        "predicted": predicted,
        "P(positive)": f"{amap.probability:.4f}" + ("" if ex["table_probability"] is None else f" (predictions table: {ex['table_probability']:.4f})"),
        "tokens seen": f"{len(amap.tokens):,} of {amap.full_length:,}" + (" (truncated)" if amap.truncated else ""),
        "layers x heads": f"{amap.attentions.shape[0]} x {amap.attentions.shape[1]}",
    }
    tracker.log_text(attention_html(amap, title, facts), f"{name}.html")
    weights = {"tokens": amap.tokens, "last_layer": amap.last_layer.tolist(), "rollout": amap.rollout[-1].tolist(), "per_layer": amap.per_layer.tolist()}
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
        "excerpt": _excerpt(amap.text),
    }


# ----------------------------------------------------------------------------- failures


def _rate(errors: int, reviews: int) -> float | None:
    return errors / reviews if reviews else None


def _group_row(factor: str, group: str, errors: np.ndarray) -> dict:
    return {"factor": factor, "group": group, "reviews": int(len(errors)), "errors": int(errors.sum()), "error_rate": _rate(int(errors.sum()), len(errors))}


def length_buckets(n_tokens: np.ndarray, errors: np.ndarray, buckets: int = 4) -> list[dict]:
    """Error rate per equal-count bucket of review length (tokens before truncation)."""
    codes, edges = pd.qcut(n_tokens, q=min(buckets, len(np.unique(n_tokens))), labels=False, retbins=True, duplicates="drop")
    rows = []
    for b in range(len(edges) - 1):
        mask = codes == b
        low, high = int(n_tokens[mask].min()), int(n_tokens[mask].max())
        rows.append({**_group_row("length", f"{low}-{high} tokens", errors[mask]), "low": low, "high": high})
    return rows


def failure_stats(table: pd.DataFrame) -> dict:
    """Every number of the failure analysis, from the predictions table alone.

    Returns:
        A JSON-ready dict: counts (errors, false positives/negatives: the confusion matrix's),
        error rates by length bucket and by cue (negation, contrast, truncation), reliability
        bins and ECE.
    """
    _check_table(table)
    y, p = table["label"].to_numpy().astype(int), table["prediction"].to_numpy().astype(int)
    errors = y != p
    confidence = table["confidence"].to_numpy().astype(float)
    texts = table["text"].astype(str)
    counts = evaluate.confusion(table)
    negation, contrast = texts.str.contains(NEGATION).to_numpy(), texts.str.contains(CONTRAST).to_numpy()
    truncated = table["truncated"].to_numpy().astype(bool)
    cues = []
    for factor, mask, yes, no in (("negation", negation, "with negation", "without negation"), ("contrast", contrast, "with contrast marker", "without contrast marker"), ("truncation", truncated, "truncated", "not truncated")):
        cues += [_group_row(factor, yes, errors[mask]), _group_row(factor, no, errors[~mask])]
    return {
        "reviews": int(len(table)),
        "errors": int(errors.sum()),
        "false_positives": int(counts[0, 1]),
        "false_negatives": int(counts[1, 0]),
        "true_negatives": int(counts[0, 0]),
        "true_positives": int(counts[1, 1]),
        "error_rate": float(errors.mean()),
        "accuracy": float(1 - errors.mean()),
        "confusion_matrix": counts.tolist(),
        "ece": evaluate.expected_calibration_error(confidence, (~errors).astype(float)),
        "errors_mean_confidence": float(confidence[errors].mean()) if errors.any() else None,
        "correct_mean_confidence": float(confidence[~errors].mean()) if (~errors).any() else None,
        "by_length": length_buckets(table["n_tokens"].to_numpy(), errors),
        "by_cue": cues,
        "reliability": evaluate.reliability(confidence, (~errors).astype(float)),  # the bins of test/ece
    }


def most_confident_errors(table: pd.DataFrame, k: int = TOP_ERRORS) -> pd.DataFrame:
    """The ``k`` errors the model was surest of, with an excerpt and the cues they carry."""
    wrong = table[table["label"] != table["prediction"]].sort_values("confidence", ascending=False, kind="stable").head(k)
    return pd.DataFrame(
        {
            "id": wrong["id"].astype(str),
            "label": [data_mod.LABELS[int(v)] for v in wrong["label"]],
            "prediction": [data_mod.LABELS[int(v)] for v in wrong["prediction"]],
            "confidence": wrong["confidence"].astype(float),
            "n_tokens": wrong["n_tokens"].astype(int),
            "truncated": wrong["truncated"].astype(bool),
            "negation": wrong["text"].str.contains(NEGATION),
            "contrast": wrong["text"].str.contains(CONTRAST),
            "excerpt": [_excerpt(t) for t in wrong["text"]],
        }
    ).reset_index(drop=True)


def _excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def failure_summary(stats: dict, split: str, top: pd.DataFrame) -> str:
    """Findings in markdown; every number is read from ``stats`` or ``top``."""
    s = stats
    lines = [
        f"# Failure analysis ({split} split)",
        "",
        f"- {s['errors']:,} errors in {s['reviews']:,} reviews (error rate {_pct(s['error_rate'])}, accuracy {_pct(s['accuracy'])}): "
        f"{s['false_positives']:,} false positives (negative reviews predicted positive) and {s['false_negatives']:,} false negatives; "
        "the same counts as the confusion matrix, from the same predictions table.",
        f"- Calibration: ECE {s['ece']:.4f}; mean confidence {_pct(s['correct_mean_confidence'])} when right, {_pct(s['errors_mean_confidence'])} when wrong.",
        "- Error rate by length (equal-count buckets): "
        + "; ".join(f"{r['group']}: {_pct(r['error_rate'])} of {r['reviews']:,}" for r in s["by_length"])
        + ".",
    ]
    for factor in ("negation", "contrast", "truncation"):
        yes, no = (r for r in s["by_cue"] if r["factor"] == factor)
        lines.append(f"- {factor.capitalize()}: {yes['group']} {_pct(yes['error_rate'])} errors ({yes['errors']:,} of {yes['reviews']:,}); {no['group']} {_pct(no['error_rate'])} ({no['errors']:,} of {no['reviews']:,}).")
    if len(top):
        first = top.iloc[0]
        lines.append(f"- Most confident error: {first['id']} (true {first['label']}, predicted {first['prediction']} with confidence {first['confidence']:.3f}): \"{_excerpt(first['excerpt'], 160)}\"")
    lines += ["", "Words counted as negation: not, no, never, nothing, nobody, none, neither, nor, nowhere, cannot, without, hardly, barely, n't. "
              "Contrast markers: but, however, although, though, yet, despite, nevertheless, nonetheless, whereas, instead, on the other hand."]  # fmt: skip
    return "\n".join(lines) + "\n"


def failure_metrics(stats: dict) -> dict[str, float]:
    out = {f"failures/{k}": float(stats[k]) for k in ("reviews", "errors", "false_positives", "false_negatives", "error_rate", "ece")}
    for row in stats["by_cue"]:
        if row["error_rate"] is not None:
            out[f"failures/error_rate_{row['group'].replace(' ', '_')}"] = row["error_rate"]
    return out


def log_failures(table: pd.DataFrame, split: str, tracker) -> dict:
    stats = failure_stats(table)
    top = most_confident_errors(table)
    tracker.log_metrics(failure_metrics(stats), step=0)
    tracker.log_dict({"split": split, **stats}, "failures/stats.json")
    tracker.log_table(pd.DataFrame(stats["by_length"] + stats["by_cue"]).drop(columns=["low", "high"], errors="ignore"), "failures/error_rates")
    if len(top):
        tracker.log_table(top, "failures/most_confident_errors")
    counts = np.asarray(stats["confusion_matrix"])
    tracker.log_figure(plots.confusion_matrix(counts, title=f"Confusion matrix ({split}, n={stats['reviews']:,})"), "failures/confusion_matrix.png")
    tracker.log_figure(plots.error_rates(stats["by_length"], stats["by_cue"], stats["error_rate"], split), "failures/error_rates.png")
    correct = (table["label"] == table["prediction"]).to_numpy()
    tracker.log_figure(plots.confidence_calibration(table["confidence"].to_numpy(), correct, stats["reliability"], stats["ece"], split), "failures/confidence.png")
    tracker.log_text(failure_summary(stats, split, top), "failures/summary.md")
    return stats


def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"the predictions table lacks columns {', '.join(missing)}; use a table logged by sentiment evaluate or train")
    if table.empty:
        raise UserError("the predictions table has no rows")


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class AnalyzeOutcome:
    run_id: str
    parts: tuple[str, ...]
    split: str
    exploration: Exploration | None
    failures: dict | None
    attention: pd.DataFrame | None


def analysis_config(base: Config | None, data_source: str | None, overrides: dict | None, tokenizer_name: str) -> Config:
    """The model's logged config (or the defaults without a model), with the given overrides."""
    if base is None:
        base = replace(Config(), model=replace(ModelConfig(), name=tokenizer_name))
    return validate(apply_overrides(base, {"data.source": data_source, **(overrides or {})}))


def run_analyze(
    tracker,
    model_uri: str | None = None,
    data_source: str | None = None,
    parts: Sequence[str] = PARTS,
    split: str = "test",
    texts: Sequence[str] = (),
    predictions_run: str | None = None,
    tokenizer_name: str | None = None,
    examples_per_group: int = 1,
    overrides: dict | None = None,
) -> AnalyzeOutcome:
    """The analyze stage: exploration, failure analysis and attention maps in the tracker's run.

    Args:
        model_uri: runs:/, models:/, a folder or Hub id; needed for attention, and for failures
            unless ``predictions_run`` gives the table (whose ``sentiment.model_uri`` tag then
            also names the model for attention).
        data_source: overrides the source in the model's config (needed without a model).
        parts: any of PARTS.
        split: the split to predict and analyse; a reused evaluate run's own split wins.
        texts: extra reviews for attention maps.
        predictions_run: an evaluate (or train) run whose ``predictions/<split>.parquet`` to reuse.
        tokenizer_name: for exploration without a model (default offline-minilm, the same
            uncased WordPiece vocabulary as distilbert-base-uncased).
        examples_per_group: reviews per GROUPS entry for attention maps.
        overrides: flat config fields (``data.max_length``, ``train.device``...).
    """
    if texts and "attention" not in parts:
        raise UserError("--texts is for attention maps; add attention to --only or drop --texts")
    if examples_per_group < 0:
        raise UserError(f"--attention-examples must be >= 0, got {examples_per_group}")
    source_tags = tracker.run_tags(predictions_run) if predictions_run else {}
    if predictions_run:
        split = source_tags.get("sentiment.split", split)
        model_uri = model_uri or (source_tags.get("sentiment.model_uri") if "attention" in parts else None)
    data_mod.check_split(split)
    needs_model = "attention" in parts or ("failures" in parts and not predictions_run)
    if needs_model and not model_uri:
        raise UserError(
            "attention maps and failure analysis need --model-uri (failures also --predictions-run RUN_ID); "
            "for data exploration alone use --only eda"
        )
    loaded = tracker.load_model_package(model_uri) if model_uri else None
    tokenizer_name = tokenizer_name or model_mod.OFFLINE_MINILM
    base = loaded.config if loaded else (tracker.load_run_config(predictions_run) if predictions_run else None)
    config = analysis_config(base, data_source, overrides, tokenizer_name)
    if loaded:
        model_mod.check_max_length(loaded.model.config, config.data.max_length, model_uri)
    tags = {"sentiment.kind": "analyze", "sentiment.parts": ",".join(parts), "sentiment.split": split, "sentiment.model_uri": model_uri,
            "sentiment.model_run_id": tracker.model_run_id(model_uri, loaded.model_id) if loaded else None, "sentiment.predictions_run_id": predictions_run}  # fmt: skip
    tracker.set_tags({k: v for k, v in tags.items() if v})
    tracker.log_config(config)
    exploration = failures = attention = table = splits = None
    if "eda" in parts or not predictions_run:
        splits = data_mod.load_splits(config.data, config.seed)
        tracker.log_splits(splits, only=None if "eda" in parts or split == "all" else split)
    if "eda" in parts:
        tokenizer = loaded.tokenizer if loaded else model_mod.load_tokenizer(tokenizer_name)
        exploration = explore(splits, tokenizer, config.data.max_length, model_uri or tokenizer_name)
        log_exploration(exploration, tracker)
    if "failures" in parts or "attention" in parts:
        table = _predictions(tracker, predictions_run, split, loaded, splits, config)
    if "failures" in parts:
        failures = log_failures(table, split, tracker)
    if "attention" in parts:
        examples = attention_examples(table, texts, examples_per_group)
        attention = log_attention(loaded.model, loaded.tokenizer, examples, config, tracker)
    return AnalyzeOutcome(tracker.run_id, tuple(parts), split, exploration, failures, attention)


def _predictions(tracker, predictions_run: str | None, split: str, loaded, splits, config: Config) -> pd.DataFrame:
    """Reuse a run's predictions table, or predict the split and log it as evaluate does."""
    if predictions_run:
        table = tracker.load_table(predictions_run, f"predictions/{split}.parquet")
        _check_table(table)
        return table
    device = device_mod.pick_device(config.train.device)
    table = evaluate.predict_frame(loaded.model, loaded.tokenizer, data_mod.select_split(splits, split), config, device)
    evaluate.log_evaluation(table, split, tracker, seed=config.seed)
    return table


def report_lines(outcome: AnalyzeOutcome) -> list[str]:
    """What the CLI prints: where to look and the headline numbers."""
    lines = [f"run id:      {outcome.run_id}", f"parts:       {', '.join(outcome.parts)}"]
    if outcome.exploration is not None:
        every = outcome.exploration.summary_rows()[-1]
        lines.append(f"eda:         {every['examples']:,} reviews, {outcome.exploration.vocabulary_size:,} distinct words, "
                     f"median {every['tokens_median']:.0f} tokens, {_pct(every['truncated_share'])} above max_length {outcome.exploration.max_length} -> eda/")  # fmt: skip
    if outcome.failures is not None:
        f = outcome.failures
        lines.append(f"failures:    {f['errors']:,} errors in {f['reviews']:,} {outcome.split} reviews ({_pct(f['error_rate'])}): "
                     f"{f['false_positives']:,} false positives, {f['false_negatives']:,} false negatives, ECE {f['ece']:.4f} -> failures/summary.md")  # fmt: skip
    if outcome.attention is not None:
        lines.append(f"attention:   {len(outcome.attention)} reviews -> attention/*.html, attention/*.png")
    return lines
