"""`sentiment score`: a review file of any size scored on one machine.

The input (Parquet, CSV or JSON lines) is streamed in chunks of ``chunk_rows`` rows, so memory
is bounded by a chunk (and, for Parquet, by the input's row group), never by the file. Inside a
chunk the reviews are batched longest first (little padding), through the same prediction path
as evaluation and serving (`evaluate.predict_logits`, the model's temperature applied; a
classical baseline's pipeline, `baselines.Baseline.probabilities`). Every
finished chunk is written at once as its own part file (atomically) beside the output, with a
manifest of what is being scored; after a crash or kill the same command continues after the
last finished chunk, so no row is scored twice or lost. At the end the parts are joined, in
input order, into the output Parquet file and removed.

Output: every input column, then ``label`` (negative/positive), ``score`` (the probability of
that label), ``probability`` (of positive), ``reason`` (why a row was not scored: a missing, non-
text or empty review; its label is then null), as the served model answers.

    sentiment score --model-uri models:/imdb-sentiment@champion --input reviews.parquet --output scored.parquet
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment import combined, evaluate, tokens
from sentiment import data as data_mod
from sentiment import device as device_mod
from sentiment import model as model_mod
from sentiment.errors import UserError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
CHUNK_ROWS = 5_000  # ~35 KB of token ids per real review while a chunk is scored: ~170 MB a chunk
SCORE_COLUMNS = ("label", "score", "probability", "reason")


@dataclass(frozen=True)
class ScoreOutcome:
    output: Path
    rows: int  # rows in the input (= rows in the output)
    unscored: int  # rows with a reason instead of a label
    resumed_chunks: int  # chunks a previous, interrupted run had finished
    seconds: float  # this run's wall time

    @property
    def reviews_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


@dataclass(frozen=True)
class ScoreJob:
    """What to score, checked before any work (`plan_score`)."""

    model_uri: str
    input: Path
    fmt: str
    output: Path
    text_column: str
    chunk_rows: int
    batch_size: int
    total: int | None  # rows, where the format says without reading the file (Parquet)

    @property
    def parts(self) -> Path:
        return self.output.with_name(self.output.name + ".parts")

    def manifest(self) -> dict:
        stat = self.input.stat()
        return {
            "input": str(self.input.resolve()),
            "input_bytes": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns,
            "model_uri": self.model_uri,
            "text_column": self.text_column,
            "chunk_rows": self.chunk_rows,
        }


def plan_score(
    model_uri: str,
    input_path: str,
    output: str,
    text_column: str = "",
    chunk_rows: int = CHUNK_ROWS,
    batch_size: int = 64,
) -> ScoreJob:
    """Check the options and the input's columns (no row scored yet)."""
    path = Path(input_path).expanduser()
    fmt = FORMATS.get(path.suffix.lower())
    if not path.is_file():
        raise UserError(
            f"--input {input_path!r} does not exist or is not a file; pass a .parquet, .csv or .jsonl file of reviews"
        )
    if fmt is None:
        raise UserError(f"--input {input_path!r}: unsupported file type {path.suffix!r}; use .parquet, .csv or .jsonl")
    out = Path(output).expanduser()
    if out.suffix.lower() != ".parquet":
        raise UserError(f"--output {output!r} must be a .parquet file")
    if out.resolve() == path.resolve():
        raise UserError("--output must not be the --input file")
    if chunk_rows < 1 or batch_size < 1:
        raise UserError(f"--chunk-rows and --batch-size must be >= 1, got {chunk_rows} and {batch_size}")
    columns, total = _columns(path, fmt)
    column = text_column or next((c for c in columns if str(c).strip().lower() in data_mod.TEXT_COLUMNS), "")
    if column not in columns:
        wanted = f"column {text_column!r}" if text_column else "a text column ('text' or 'review')"
        raise UserError(
            f"--input {input_path!r} has no {wanted}; columns found: {', '.join(map(str, columns))}; pass --text-column"
        )
    return ScoreJob(model_uri, path, fmt, out, column, chunk_rows, batch_size, total)


def _columns(path: Path, fmt: str) -> tuple[list[str], int | None]:
    """The input's columns (and its rows when the format records them), reading little."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return list(meta.schema_arrow.names), meta.metadata.num_rows
        first = next(_read(path, fmt, 100), None)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --input {str(path)!r}: {' '.join(str(exc).split())[:200]}") from None
    if first is None:
        raise UserError(f"--input {str(path)!r} has no rows")
    return list(first.columns), None


def _read(path: Path, fmt: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # pre_buffer off: with it, pyarrow keeps every byte it read ahead until the iteration ends,
        # so memory grows with the file (about 7 MB per 10,000 reviews) instead of staying one chunk
        for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    elif fmt == "csv":
        yield from pd.read_csv(path, chunksize=chunk_rows, dtype=str, keep_default_na=False)
    else:
        yield from pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False)


def unscorable(values: pd.Series) -> tuple[list[str], np.ndarray]:
    """The cleaned texts, and per row why it cannot be scored (None when it can)."""
    texts, reasons = [], np.full(len(values), None, dtype=object)
    for i, value in enumerate(values.tolist()):
        if not isinstance(value, str):
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            reasons[i] = "missing text" if missing else f"not text ({type(value).__name__})"
            texts.append("")
            continue
        text = data_mod.clean_text(value)
        if not text:
            reasons[i] = "empty text"
        texts.append(text)
    return texts, reasons


class Scorer:
    """A loaded model that turns a chunk into its scored rows."""

    def __init__(self, model_uri: str, precision: str = "auto", device: str = "auto", batch_size: int = 64) -> None:
        loaded = combined.load_package(model_uri)
        self.config, self.batch_size = loaded.config, batch_size
        # a classical baseline (T in its pipeline's weights) or a combined model answers P(positive) itself
        self.baseline = loaded.model if evaluate.reads_texts(loaded.model) else None
        if self.baseline is None:
            self.device = device_mod.pick_device(device)
            self.precision = device_mod.pick_precision(precision, self.device)
            self.model = loaded.model.to(self.device).eval()
            self.tokenizer, self.temperature = loaded.tokenizer, model_mod.temperature_of(loaded.model)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """P(positive) of cleaned, non-empty texts, the model's temperature applied."""
        if self.baseline is not None:
            return self.baseline.probabilities(texts)
        d = self.config.data
        encoded = tokens.encode(texts, self.tokenizer, d.max_length, d.truncation)
        logits = evaluate.predict_logits(
            self.model, encoded, self.device, self.batch_size, self.precision, self.tokenizer.pad_token_id
        )
        return 1.0 / (1.0 + np.exp(-evaluate.logit_margin(logits) / self.temperature))

    def score(self, chunk: pd.DataFrame, column: str) -> pd.DataFrame:
        texts, reasons = unscorable(chunk[column])
        ok = np.flatnonzero(pd.isna(reasons))
        probability = np.full(len(chunk), np.nan)
        if len(ok):
            probability[ok] = self.probabilities([texts[i] for i in ok])
        positive = probability > 0.5
        scored = ~np.isnan(probability)
        label = np.where(scored, np.where(positive, "positive", "negative"), None)
        score = np.where(positive, probability, 1 - probability)
        extra = {
            "label": label,
            "score": np.where(scored, score, np.nan),
            "probability": probability,
            "reason": reasons,
        }
        clash = [c for c in SCORE_COLUMNS if c in chunk.columns]
        base = chunk.rename(columns={c: f"input_{c}" for c in clash}).reset_index(drop=True)
        return base.assign(**extra)


def score_file(job: ScoreJob, scorer: Scorer, report=None) -> ScoreOutcome:
    """Score ``job`` chunk by chunk (resuming after the last finished chunk), then join the parts.

    Args:
        report: called with (rows done, total or None, seconds) after every chunk.
    """
    started = time.perf_counter()
    done_before = _open_parts(job)
    rows = 0
    for index, chunk in enumerate(_read(job.input, job.fmt, job.chunk_rows)):
        part = job.parts / f"part-{index:06d}.parquet"
        if index < done_before:
            rows += len(chunk)
            continue
        table = scorer.score(chunk, job.text_column)
        tmp = part.with_suffix(".tmp")
        table.to_parquet(tmp, index=False)
        os.replace(tmp, part)  # a part exists whole or not at all
        rows += len(chunk)
        del table, chunk
        _trim_heap()
        if report is not None:
            report(rows, job.total, time.perf_counter() - started)
    unscored = _join(job)
    return ScoreOutcome(job.output, rows, unscored, done_before, time.perf_counter() - started)


def _trim_heap() -> None:
    """Hand the chunk's freed heap back to the OS. glibc keeps freed small blocks in its arenas, so
    without this the process's resident memory creeps up chunk after chunk (about 10 MB per
    10,000 reviews); without glibc it does nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _open_parts(job: ScoreJob) -> int:
    """Chunks an interrupted run of the same job finished (0 for a fresh start)."""
    manifest = job.manifest()
    path = job.parts / "manifest.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != manifest:
            changed = ", ".join(k for k in manifest if before.get(k) != manifest[k])
            raise UserError(
                f"{job.parts} holds parts of another scoring job ({changed} differ); delete that folder or pass the "
                "same options"
            )
    else:
        job.parts.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2))
    for stale in job.parts.glob("*.tmp"):
        stale.unlink()
    done = sorted(job.parts.glob("part-*.parquet"))
    if [p.name for p in done] != [f"part-{i:06d}.parquet" for i in range(len(done))]:
        raise UserError(f"{job.parts} has a gap in its parts; delete that folder and score again")
    return len(done)


def _join(job: ScoreJob) -> int:
    """Join the parts, in order, into the output (one part in memory at a time); returns the
    rows that were not scored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(job.parts.glob("part-*.parquet"))
    if not parts:
        raise UserError(f"--input {str(job.input)!r} has no rows")
    schema = pa.unify_schemas([pq.read_schema(p) for p in parts], promote_options="permissive")
    tmp, unscored = job.output.with_suffix(".parquet.tmp"), 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            table = pq.read_table(part).cast(schema)
            unscored += len(table) - table.column("reason").null_count
            writer.write_table(table)
    os.replace(tmp, job.output)
    shutil.rmtree(job.parts)
    return unscored


def progress_printer():
    """A tqdm bar on a terminal (reviews/s, ETA), a plain line per chunk otherwise."""
    from tqdm.auto import tqdm

    bar = None

    def report(rows: int, total: int | None, seconds: float) -> None:
        nonlocal bar
        rate = rows / seconds if seconds else 0.0
        if sys.stderr.isatty():
            bar = bar or tqdm(total=total, unit="review", file=sys.stderr, leave=False)
            bar.update(rows - bar.n)
            return
        eta = f"  ETA {int((total - rows) / rate)} s" if total and rate else ""
        of = f" / {total:,}" if total else ""
        print(f"scored {rows:,}{of} reviews  {rate:.1f} reviews/s{eta}", file=sys.stderr, flush=True)

    return report
