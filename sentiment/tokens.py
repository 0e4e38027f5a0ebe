"""The one tokenization path: truncation (head, head+tail), word-piece spans, the token cache.

Training, evaluation, data exploration and attention maps all tokenize here, so the ids a model
is trained on, evaluated on and explained with are the same by construction.

    python -c "from sentiment.tokens import encode; from sentiment.model import load_tokenizer; \
print(encode(['A fine film.'], load_tokenizer('offline-minilm'), 16).input_ids)"
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment.errors import UserError

HEAD_TAIL_SHARE = (128, 510)  # Sun et al. (2019): of 510 content tokens keep the first 128 (and the last 382)
TOKEN_CHUNK = 1000  # reviews tokenized at once: memory holds one chunk's untruncated ids, not the corpus's


@dataclass(frozen=True)
class Encoded:
    """Token ids per review (special tokens included, truncated) and their full lengths."""

    input_ids: list[list[int]]
    full_lengths: np.ndarray  # tokens before truncation, special tokens included

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


@dataclass(frozen=True)
class Reviews:
    """A split as the model sees it: its table (id, text, label) and, row for row, its token ids,
    with what batching and the predictions table need (padding id, max length)."""

    frame: pd.DataFrame
    encoded: Encoded
    pad_id: int
    max_length: int

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy()


def encode_reviews(frame: pd.DataFrame, tokenizer, max_length: int, truncation: str) -> Reviews:
    """`encode_cached` the texts of a split table (columns id, text, label)."""
    encoded = encode_cached(frame["text"].tolist(), tokenizer, max_length, truncation)
    return Reviews(frame, encoded, tokenizer.pad_token_id, max_length)


# ----------------------------------------------------------------------------- truncation


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence (e.g. [CLS] / [SEP])."""
    with_special = tokenizer("a")["input_ids"]
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(content) + 1):
        if with_special[start : start + len(content)] == content:
            return with_special[:start], with_special[start + len(content) :]
    raise UserError(f"cannot work out the special tokens of tokenizer {type(tokenizer).__name__}")


def content_ids(texts: Sequence[str], tokenizer) -> list[list[int]]:
    """Ids of each text without special tokens and without truncation."""
    return tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


def head_and_tail(budget: int, truncation: str) -> tuple[int, int]:
    """How many content tokens a review longer than ``budget`` keeps from its start and its end.

    ``head`` keeps the first ``budget``; ``head_tail`` follows Sun et al. (2019): of 510 content
    tokens the first 128 and the last 382, scaled to other budgets.
    """
    if truncation == "head":
        return budget, 0
    head = max(1, round(budget * HEAD_TAIL_SHARE[0] / HEAD_TAIL_SHARE[1]))
    return head, budget - head


def kept_positions(n: int, budget: int, truncation: str) -> list[int]:
    """Which of ``n`` content tokens survive truncation to ``budget`` (what `encode` keeps)."""
    if n <= budget:
        return list(range(n))
    head, tail = head_and_tail(budget, truncation)
    return list(range(head)) + list(range(n - tail, n))


def encode(
    texts: Sequence[str], tokenizer, max_length: int, truncation: str = "head", chunk: int = TOKEN_CHUNK
) -> Encoded:
    """Tokenize without padding; truncate to ``max_length`` keeping the head or head and tail.
    ``chunk`` texts at a time, each truncated before the next is tokenized: a long review's full
    ids never outlive its chunk (scoring 10,000 reviews at once otherwise holds ~0.5 GB of them)."""
    prefix, suffix = special_tokens(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    head, tail = head_and_tail(budget, truncation)
    out, full = [], np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), chunk):
        for i, ids in enumerate(content_ids(texts[start : start + chunk], tokenizer), start):
            full[i] = len(ids) + len(prefix) + len(suffix)
            if len(ids) > budget:
                ids = ids[:head] + ids[len(ids) - tail :]  # (kept_positions, as slices: this runs per review)
            out.append(prefix + ids + suffix)
    return Encoded(input_ids=out, full_lengths=full)


def count_tokens(texts: Sequence[str], tokenizer, chunk: int = TOKEN_CHUNK) -> tuple[np.ndarray, int, int]:
    """Tokens per text (special tokens included, no truncation), ``chunk`` texts at a time.

    Returns:
        (tokens per text: `encode`'s full_lengths, content tokens in all, of which unknown-token ids).
    """
    prefix, suffix = special_tokens(tokenizer)
    out = np.empty(len(texts), dtype=np.int64)
    total = unknown = 0
    unk_id = tokenizer.unk_token_id
    for start in range(0, len(texts), chunk):
        for i, row in enumerate(content_ids(texts[start : start + chunk], tokenizer)):
            out[start + i] = len(row) + len(prefix) + len(suffix)
            total += len(row)
            unknown += row.count(unk_id) if unk_id is not None else 0
    return out, total, unknown


# ----------------------------------------------------------------------------- word-piece spans


@dataclass(frozen=True)
class TokenSpans:
    """A review tokenized as `encode` does, with where each token came from."""

    ids: list[int]
    tokens: list[str]  # display labels: the token's characters, "##" when it continues a word
    spans: list[tuple[int, int] | None]  # characters in the text; None for special tokens
    positions: list[int]  # index among the content tokens before truncation; -1 for special tokens
    content_tokens: int  # content tokens before truncation


def encode_with_spans(text: str, tokenizer, max_length: int, truncation: str) -> TokenSpans:
    """The ids `encode` would give, plus per token its label, character span and position."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"attention maps need a fast tokenizer (character offsets); {type(tokenizer).__name__} is not one"
        )
    prefix, suffix = special_tokens(tokenizer)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    ids, offsets, words = enc["input_ids"], enc["offset_mapping"], enc.word_ids()
    keep = kept_positions(len(ids), max_length - len(prefix) - len(suffix), truncation)
    labels, spans = [], []
    for k, i in enumerate(keep):
        start, end = offsets[i]
        continues = k > 0 and keep[k - 1] == i - 1 and words[i] is not None and words[i] == words[i - 1]
        labels.append(("##" if continues else "") + text[start:end])
        spans.append((int(start), int(end)))
    specials = tokenizer.convert_ids_to_tokens(prefix + suffix)
    return TokenSpans(
        ids=prefix + [ids[i] for i in keep] + suffix,
        tokens=specials[: len(prefix)] + labels + specials[len(prefix) :],
        spans=[None] * len(prefix) + spans + [None] * len(suffix),
        positions=[-1] * len(prefix) + keep + [-1] * len(suffix),
        content_tokens=len(ids),
    )


# ----------------------------------------------------------------------------- the token cache

# Bump when the cached layout or `encode` semantics change: old entries are then never read.
TOKEN_CACHE_FORMAT = 1
CACHE_DIR_ENV = "SENTIMENT_CACHE_DIR"  # a folder, or "off" to disable the token cache
CACHE_MAX_ENV = "SENTIMENT_CACHE_MAX_MB"
CACHE_MAX_DEFAULT_MB = 2048


def token_cache_dir() -> Path | None:
    """Where tokenized splits are cached: ``$SENTIMENT_CACHE_DIR/tokens`` (``off`` disables),
    else ``$XDG_CACHE_HOME/sentiment/tokens``, else ``~/.cache/sentiment/tokens``."""
    configured = os.environ.get(CACHE_DIR_ENV, "").strip()
    if configured.lower() in ("off", "none", "0", "false"):
        return None
    if configured:
        return Path(configured).expanduser() / "tokens"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sentiment" / "tokens"


def token_cache_limit_bytes() -> int:
    """The cache's size cap: ``$SENTIMENT_CACHE_MAX_MB`` (default 2048 MB; an entry stores 4 bytes
    per kept token); the least recently used entries go first."""
    raw = os.environ.get(CACHE_MAX_ENV, "").strip() or str(CACHE_MAX_DEFAULT_MB)
    try:
        megabytes = float(raw)
    except ValueError:
        raise UserError(f"{CACHE_MAX_ENV} must be a number of megabytes, got {raw!r}") from None
    if megabytes <= 0:
        raise UserError(f"{CACHE_MAX_ENV} must be > 0 (set {CACHE_DIR_ENV}=off to disable the cache), got {raw!r}")
    return int(megabytes * 2**20)


def prune_token_cache(folder: Path, keep: Path, limit_bytes: int) -> None:
    """Delete the least recently used entries until the folder fits ``limit_bytes``; ``keep``
    (the entry just written) stays."""
    entries = []
    for path in Path(folder).glob("*.npz"):
        with contextlib.suppress(OSError):
            info = path.stat()
            entries.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= limit_bytes:
            break
        if path == keep:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of everything that decides a tokenizer's ids: vocabulary, added tokens,
    normalizer (e.g. lower-casing), pre-tokenizer and special tokens; not where it was loaded
    from, so the same tokenizer read from a logged model and from the Hub shares cache entries."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # Per-call state the tokenizer keeps from its last call, not part of its identity.
        spec.pop("truncation", None)
        spec.pop("padding", None)
        digest.update(json.dumps(spec, sort_keys=True).encode())
    else:  # a slow (pure Python) tokenizer
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        digest.update(repr(sorted((k, str(v)) for k, v in tokenizer.init_kwargs.items())).encode())
    digest.update(json.dumps(special_tokens(tokenizer)).encode())
    return digest.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over the texts in order (length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for text in texts:
        raw = text.encode("utf-8")
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return digest.hexdigest()


def token_cache_key(texts: Sequence[str], tokenizer, max_length: int, truncation: str) -> str:
    """The cache entry of (tokenizer identity, max length, truncation, texts)."""
    parts = [
        f"v{TOKEN_CACHE_FORMAT}",
        tokenizer_fingerprint(tokenizer),
        str(max_length),
        truncation,
        texts_digest(texts),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def encode_cached(
    texts: Sequence[str], tokenizer, max_length: int, truncation: str = "head", cache_dir: Path | None = None
) -> Encoded:
    """`encode`, computed once per (tokenizer, max_length, truncation, texts) and then read from disk.

    50,000 reviews of IMDB's length profile (the benchmark's generated corpus) take 13.4 s to
    tokenize on 2 CPU cores and 0.8 s to read back (a 50 MB entry). A corrupt or unreadable entry
    is recomputed. The folder is `token_cache_dir()` unless ``cache_dir`` is given;
    ``SENTIMENT_CACHE_DIR=off`` disables it.
    """
    folder = cache_dir if cache_dir is not None else token_cache_dir()
    if folder is None:
        return encode(texts, tokenizer, max_length, truncation)
    limit = token_cache_limit_bytes()  # a bad setting fails before the work, not after
    path = Path(folder) / f"{token_cache_key(texts, tokenizer, max_length, truncation)}.npz"
    cached = _read_entry(path, len(texts))
    if cached is not None:
        return cached
    encoded = encode(texts, tokenizer, max_length, truncation)
    _write_entry(path, encoded, limit)
    return encoded


def _read_entry(path: Path, count: int) -> Encoded | None:
    """A cache entry of ``count`` reviews, or None when it is missing, corrupt or of another size."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            ids, offsets, full = stored["ids"], stored["offsets"], stored["full_lengths"]
    except (OSError, ValueError, KeyError):
        return None  # recomputed and overwritten by the caller
    if len(offsets) != count + 1:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: the last to be pruned
    flat = ids.tolist()
    return Encoded([flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())], full)


def _write_entry(path: Path, encoded: Encoded, limit_bytes: int) -> None:
    lengths = encoded.lengths
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_ids = np.fromiter(itertools.chain.from_iterable(encoded.input_ids), dtype=np.int32, count=int(offsets[-1]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, ids=flat_ids, offsets=offsets, full_lengths=encoded.full_lengths)
        os.replace(tmp, path)  # atomic: parallel runs never read a half-written entry
        prune_token_cache(path.parent, path, limit_bytes)
    except OSError:
        pass  # a read-only or full disk only costs the speed-up
