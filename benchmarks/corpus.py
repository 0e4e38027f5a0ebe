"""A seeded, offline review corpus with IMDB's length profile, made from the sample corpus's words.

IMDB reviews have log-normal word counts (mean about 230 words, a long tail: about 8% exceed 512
WordPiece tokens). Length is what decides training and inference cost, so the benchmark needs
that profile; the words come from the bundled `sample` corpus, split into words that lean
positive, lean negative, or are neutral (by smoothed log-odds between the classes). Each
generated review mixes neutral words with sentiment words mostly of its own class, so a model
can learn it, but short reviews stay ambiguous.

    python -m benchmarks.corpus 2000    # prints the length profile of 2,000 generated reviews
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sentiment.data import SAMPLE_PATH

MEAN_WORDS = 230.0
# Log-normal spread chosen so that about 8% of reviews exceed 512 tokens with an uncased
# WordPiece tokenizer (about 1.17 tokens per generated word).
SIGMA = 0.6
MIN_WORDS = 10
SENTIMENT_RATE = 0.15  # share of words drawn from the sentiment lexicon
OWN_CLASS = 0.95  # of those, the share that leans towards the review's own label
_WORD = re.compile(r"[a-z][a-z']*")


@dataclass(frozen=True)
class Lexicon:
    neutral: list[str]
    neutral_p: np.ndarray
    leaning: tuple[list[str], list[str]]  # (negative-leaning, positive-leaning)
    leaning_p: tuple[np.ndarray, np.ndarray]


def build_lexicon(min_count: int = 4, min_log_odds: float = 2.0) -> Lexicon:
    """Word lists and frequencies from the bundled sample corpus."""
    counts = (Counter(), Counter())
    for line in SAMPLE_PATH.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        label = 1 if str(record["label"]).lower().startswith("pos") else 0
        counts[label].update(_WORD.findall(record["text"].lower()))
    total = (sum(counts[0].values()), sum(counts[1].values()))
    neutral, leaning = Counter(), (Counter(), Counter())
    for word in sorted(set(counts[0]) | set(counts[1])):
        n0, n1 = counts[0][word], counts[1][word]
        odds = math.log((n1 + 1) / (total[1] + 1)) - math.log((n0 + 1) / (total[0] + 1))
        if n0 + n1 >= min_count and abs(odds) >= min_log_odds:
            leaning[int(odds > 0)][word] = n0 + n1
        else:
            neutral[word] = n0 + n1

    def normalised(counter: Counter) -> tuple[list[str], np.ndarray]:
        words = sorted(counter)
        weights = np.array([counter[w] for w in words], dtype=np.float64)
        return words, weights / weights.sum()

    neutral_words, neutral_p = normalised(neutral)
    neg_words, neg_p = normalised(leaning[0])
    pos_words, pos_p = normalised(leaning[1])
    return Lexicon(neutral_words, neutral_p, (neg_words, pos_words), (neg_p, pos_p))


def word_counts(n: int, rng: np.random.Generator, mean_words: float = MEAN_WORDS, sigma: float = SIGMA) -> np.ndarray:
    """Log-normal word counts with the given mean (not median)."""
    mu = math.log(mean_words) - sigma**2 / 2
    return np.maximum(MIN_WORDS, np.round(rng.lognormal(mu, sigma, size=n))).astype(int)


def _review(n_words: int, label: int, lexicon: Lexicon, rng: np.random.Generator) -> str:
    is_sentiment = rng.random(n_words) < SENTIMENT_RATE
    own = rng.random(n_words) < OWN_CLASS
    neutral = rng.choice(len(lexicon.neutral), size=n_words, p=lexicon.neutral_p)
    words = []
    for i in range(n_words):
        if is_sentiment[i]:
            side = label if own[i] else 1 - label
            pool, p = lexicon.leaning[side], lexicon.leaning_p[side]
            words.append(pool[rng.choice(len(pool), p=p)])
        else:
            words.append(lexicon.neutral[neutral[i]])
    sentences, start = [], 0
    while start < n_words:
        end = min(n_words, start + int(rng.integers(8, 25)))
        sentence = " ".join(words[start:end])
        sentences.append(sentence[:1].upper() + sentence[1:] + ("!" if rng.random() < 0.1 else "."))
        start = end
    return " ".join(sentences)


def generate(n: int, seed: int, mean_words: float = MEAN_WORDS, sigma: float = SIGMA) -> pd.DataFrame:
    """``n`` balanced reviews, columns id, text, label (0/1); the same for the same seed.

    Args:
        n: reviews to generate (labels alternate, so classes differ by at most one).
        seed: the only source of randomness.
        mean_words, sigma: the log-normal length profile (defaults: IMDB's).
    """
    rng = np.random.default_rng(seed)
    lexicon = build_lexicon()
    lengths = word_counts(n, rng, mean_words, sigma)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    texts = [_review(int(k), int(y), lexicon, rng) for k, y in zip(lengths, labels)]
    return pd.DataFrame({"id": [f"gen/{i}" for i in range(n)], "text": texts, "label": labels.astype(int)})


def length_profile(texts: list[str], tokenizer=None, limit: int = 512) -> dict[str, float]:
    """Word counts (mean, median, p90) and, with a tokenizer, token counts and the share over ``limit``."""
    words = np.array([len(t.split()) for t in texts])
    out = {
        "reviews": float(len(texts)),
        "mean_words": float(words.mean()),
        "median_words": float(np.median(words)),
        "p90_words": float(np.quantile(words, 0.9)),
    }
    if tokenizer is not None:
        tokens = np.array(
            [
                len(ids)
                for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            ]
        )
        out.update(
            mean_tokens=float(tokens.mean()),
            over_limit_share=float((tokens > limit).mean()),
            tokens_per_word=float(tokens.sum() / words.sum()),
        )
    return out


if __name__ == "__main__":
    from sentiment.model import load_tokenizer

    frame = generate(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, seed=0)
    print(json.dumps(length_profile(frame["text"].tolist(), load_tokenizer("offline-minilm")), indent=2))
    print(frame["text"].iloc[0][:400])
