"""Data exploration: class balance, words and tokens per review per split, the share above
max_length, vocabulary and tokenizer facts. Tokens are counted a chunk at a time, so IMDB's 50k
reviews never sit in memory tokenized.

    sentiment analyze --data sample --only eda
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sentiment import data as data_mod
from sentiment import plots
from sentiment.tokens import count_tokens

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


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
        parts["all"] = SplitLengths(
            *(np.concatenate([getattr(s, f) for s in self.splits.values()]) for f in ("labels", "words", "tokens"))
        )
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
        out = {
            f"eda/{row['split']}/{k}": float(v) for row in self.summary_rows() for k, v in row.items() if k != "split"
        }
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
        counts, n_tokens, n_unknown = count_tokens(texts, tokenizer)
        total, unknown = total + n_tokens, unknown + n_unknown
        for text in texts:
            vocabulary.update(_WORD.findall(text.lower()))
        words = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
        lengths[name] = SplitLengths(labels=frame["label"].to_numpy().astype(int), words=words, tokens=counts)
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
    tracker.log_dict(
        {
            "max_length": eda.max_length,
            "vocabulary_size": eda.vocabulary_size,
            "unk_share": eda.unk_share,
            "splits": rows,
            "tokenizer": eda.tokenizer,
        },
        "eda/exploration.json",
    )
    counts = {r["split"]: (r["negative"], r["positive"]) for r in rows if r["split"] != "all"}
    words = {name: s.words for name, s in eda.splits.items()}
    tokens = {name: s.tokens for name, s in eda.splits.items()}
    truncated = {r["split"]: r["truncated_share"] for r in rows if r["split"] != "all"}
    tracker.log_figure(plots.class_balance(counts), "eda/class_balance.png")
    tracker.log_figure(plots.length_histograms(words, tokens, eda.max_length, truncated), "eda/length_histograms.png")
    tracker.log_figure(plots.length_boxplot(words, tokens, eda.max_length), "eda/length_boxplot.png")
