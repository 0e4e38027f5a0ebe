"""Load review sources, split them stratified and seeded, and batch them by length.

A source becomes one table with columns ``id, text, label, split`` (label 0 = negative,
1 = positive; split is ``train``/``test`` when the source has its own test split, else empty).

    python -c "from sentiment.data import load_splits; from sentiment.config import DataConfig; \
print(load_splits(DataConfig(source='sample'), seed=42).sizes())"
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment import hub
from sentiment.config import DataConfig
from sentiment.errors import UserError

LABELS = ("negative", "positive")
SPLITS = ("train", "val", "test", "all")  # what evaluate and analyze accept; all = the three together
SAMPLE_PATH = Path(__file__).parent / "data" / "sample_reviews.jsonl"
IMDB_HUB_ID = "stanfordnlp/imdb"
TEXT_COLUMNS = ("text", "review")
LABEL_COLUMNS = ("label", "sentiment")
_LABEL_WORDS = {"negative": 0, "neg": 0, "0": 0, "positive": 1, "pos": 1, "1": 1}
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass(frozen=True)
class Splits:
    """The three splits as tables (columns id, text, label) plus where they came from."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    source: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def clean_text(text: str) -> str:
    """Turn the HTML line breaks scraped reviews carry into spaces and squeeze whitespace."""
    return " ".join(_BREAK.sub(" ", text).split())


# ----------------------------------------------------------------------------- sources


def load_source(source: str) -> pd.DataFrame:
    """Read a source into a table with columns id, text, label (0/1), split.

    Args:
        source: ``imdb``, ``sample``, an ``aclImdb/`` folder, or a .csv/.jsonl/.json/.parquet file.
    Raises:
        UserError: unknown source, unreadable file, missing columns, bad labels or empty texts.
    """
    if source == "imdb":
        frame = _load_hub_imdb()
    elif source == "sample":
        frame = _read_file(SAMPLE_PATH)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            frame = _load_aclimdb(path)
        elif path.is_file():
            frame = _read_file(path)
        else:
            raise UserError(
                f"data source {source!r} is neither 'imdb', 'sample', an existing aclImdb/ folder "
                "nor an existing .csv/.jsonl/.parquet file"
            )
    return _normalise(frame, source)


def _load_hub_imdb() -> pd.DataFrame:
    offline = hub.go_offline_if_unreachable()  # a cached copy still loads; no minute of retries
    import datasets  # heavy import, only for the Hub source

    try:
        ds = datasets.load_dataset(IMDB_HUB_ID)
    except Exception as exc:  # offline, proxy, auth: all mean the same to the user
        reason = (
            f"the Hub is not reachable: {offline}"
            if offline
            else " ".join(str(exc).split())[:200] or type(exc).__name__
        )
        raise UserError(
            f"cannot load {IMDB_HUB_ID!r} from the Hugging Face Hub ({reason}); without internet use "
            "--data sample, an extracted aclImdb/ folder, or a CSV/JSONL/Parquet file"
        ) from None
    parts = []
    for split in ("train", "test"):
        frame = ds[split].to_pandas()[["text", "label"]]
        frame["id"] = [f"{split}/{i}" for i in range(len(frame))]
        frame["split"] = split
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _load_aclimdb(root: Path) -> pd.DataFrame:
    rows = []
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            folder = root / split / label
            for file in sorted(folder.glob("*.txt")):
                rows.append(
                    {
                        "id": f"{split}/{label}/{file.stem}",
                        "text": file.read_text(encoding="utf-8", errors="replace"),
                        "label": label,
                        "split": split,
                    }
                )
    if not rows:
        raise UserError(
            f"folder {str(root)!r} has no reviews: expected aclImdb layout train/pos, train/neg, "
            "test/pos, test/neg with .txt files"
        )
    return pd.DataFrame(rows)


def _read_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".jsonl", ".json"):
            return _read_jsonl(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except UserError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot read {str(path)!r}: {reason}") from None
    raise UserError(f"unsupported file type {suffix!r} for {str(path)!r}: use .csv, .jsonl or .parquet")


def _read_jsonl(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        return pd.DataFrame(json.loads(text))
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"cannot read {str(path)!r}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"cannot read {str(path)!r}: line {number} is not a JSON object")
        records.append(record)
    if not records:
        raise UserError(f"cannot read {str(path)!r}: the file has no records")
    return pd.DataFrame(records)


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lowered = {c.lower().strip(): c for c in columns}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _normalise(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Detect columns, map labels to 0/1, clean texts, and check every row."""
    text_col = _pick(frame.columns, TEXT_COLUMNS)
    label_col = _pick(frame.columns, LABEL_COLUMNS)
    if text_col is None or label_col is None:
        missing = "text column ('text' or 'review')" if text_col is None else "label column ('label' or 'sentiment')"
        raise UserError(f"data {source!r} has no {missing}; columns found: {', '.join(map(str, frame.columns))}")
    if frame.empty:
        raise UserError(f"data {source!r} has no rows")
    labels = frame[label_col].map(lambda v: _LABEL_WORDS.get(str(v).strip().lower()))
    distinct = sorted({str(v).strip() for v in frame[label_col]})
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise UserError(
            f"data {source!r} row {row + 1} has label {frame[label_col].iloc[row]!r}: labels must be two classes, "
            f"0/1 or negative/positive (found {len(distinct)} distinct values: {', '.join(distinct[:5])})"
        )
    texts = frame[text_col].map(lambda v: clean_text(v) if isinstance(v, str) else "")
    empty = np.flatnonzero((texts.str.len() == 0).to_numpy())
    if len(empty):
        raise UserError(
            f"data {source!r} row {int(empty[0]) + 1} has an empty text ({len(empty)} such rows); remove or fill them"
        )
    if labels.nunique() < 2:
        raise UserError(
            f"data {source!r} has only one class ({LABELS[int(labels.iloc[0])]}); both negative and positive are needed"
        )
    ids = frame["id"].astype(str) if "id" in frame.columns else pd.Series([str(i) for i in range(len(frame))])
    split = frame["split"].astype(str) if "split" in frame.columns else pd.Series([""] * len(frame))
    return pd.DataFrame(
        {
            "id": ids.to_numpy(),
            "text": texts.to_numpy(),
            "label": labels.astype(int).to_numpy(),
            "split": split.to_numpy(),
        }
    )


# ----------------------------------------------------------------------------- splits


def _stratified(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ``fraction`` of rows keeping the class balance; returns (rest, held_out)."""
    n_held = int(round(len(frame) * fraction))
    smallest = int(frame["label"].value_counts().min())
    if smallest < 2:
        raise UserError(
            f"cannot split stratified: a class has only {smallest} review; each class needs at least 2 (better dozens)"
        )
    if n_held < 2 or len(frame) - n_held < 2:
        raise UserError(
            f"cannot hold out {fraction:.0%} of {len(frame)} reviews: too few; use more data or another fraction"
        )
    from sklearn.model_selection import train_test_split  # (slow to import; only when splitting)

    rest, held = train_test_split(frame, test_size=n_held, stratify=frame["label"], random_state=seed)
    return rest.reset_index(drop=True), held.reset_index(drop=True)


def _sample(frame: pd.DataFrame, size: int, seed: int, what: str) -> pd.DataFrame:
    """A stratified sample of ``size`` rows (0: all), in the frame's order."""
    if size == 0 or size == len(frame):
        return frame
    if size > len(frame):
        raise UserError(
            f"data.{what}_size is {size} but the {what} split has only {len(frame)} reviews; lower it or use 0 (all)"
        )
    from sklearn.model_selection import train_test_split

    _, held = train_test_split(frame, test_size=size, stratify=frame["label"], random_state=seed)
    return frame.loc[sorted(held.index)].reset_index(drop=True)


def make_splits(frame: pd.DataFrame, config: DataConfig, seed: int, source: str = "") -> Splits:
    """Split a normalised table into train/val/test, stratified and seeded.

    A source with its own test split keeps it; validation is ``val_fraction`` of the training
    part (IMDB: 25,000 -> 18,750 / 6,250). Otherwise ``test_fraction`` of all rows is held out
    first. ``train_fraction`` < 1 then subsamples the training split, still stratified, and
    ``train_size`` / ``val_size`` / ``test_size`` sample each split down to that many reviews.
    Everything but the test split of a source that has one is seeded with ``config.split_seed``
    (``seed`` when it is -1), so runs sharing a split seed share their reviews; with
    ``train_sample_by_seed`` the training sample is drawn with ``seed`` all the same.
    """
    cols = ["id", "text", "label"]
    train_seed = seed if config.train_sample_by_seed or config.split_seed < 0 else config.split_seed
    seed = seed if config.split_seed < 0 else config.split_seed
    if (frame["split"] == "test").any():
        pool, test = frame[frame["split"] != "test"][cols], frame[frame["split"] == "test"][cols]
        test = test.reset_index(drop=True)
    else:
        pool, test = _stratified(frame[cols], config.test_fraction, seed)
    train, val = _stratified(pool, config.val_fraction, seed)
    if config.train_fraction < 1:
        _, train = _stratified(train, config.train_fraction, train_seed)
    train = _sample(train, config.train_size, train_seed, "train")
    val = _sample(val, config.val_size, seed, "val")
    test = _sample(test, config.test_size, seed, "test")
    return Splits(train=train, val=val, test=test, source=source)


def load_splits(config: DataConfig, seed: int) -> Splits:
    """`load_source` then `make_splits`."""
    return make_splits(load_source(config.source), config, seed, source=config.source)


def check_split(split: str) -> str:
    """``split`` itself when it names one of SPLITS; a UserError otherwise."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def select_split(splits: Splits, split: str) -> pd.DataFrame:
    """One split's table, or all three concatenated for ``all``."""
    if check_split(split) == "all":
        return pd.concat([splits.train, splits.val, splits.test], ignore_index=True)
    return getattr(splits, split)


# ----------------------------------------------------------------------------- batching


class LengthGroupedBatches:
    """Batches of similar length, in shuffled order: padding drops, randomness stays (a batch
    sampler: iterating it yields one epoch's lists of indices).

    Each epoch shuffles all indices, cuts them into windows of ``batch_size * window`` reviews,
    sorts each window by length and cuts it into batches, then shuffles the batches. Every
    index appears exactly once per epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, window: int = 50) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        size = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(batches)
        return iter(batches)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches: longest first (peak memory shows at once), minimal padding."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def make_collate(pad_id: int):
    """Pad a batch to its longest member (dynamic padding)."""

    import torch  # here, not at the top: checking data before a run needs no torch

    def collate(batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        labels = torch.tensor([label for _, label in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    return collate
