"""The analyze stage: data exploration, failure analysis and attention maps of a model, logged
to one run. Every failure number comes from ONE predictions table (the one `evaluate` logs, or
one predicted the same way), so the failure counts equal the confusion matrix by construction.

    sentiment analyze --model-uri models:/imdb-sentiment@champion --data imdb
    sentiment analyze --data sample --only eda
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from sentiment import data as data_mod
from sentiment import device as device_mod
from sentiment import evaluate, tokens, tracking
from sentiment import model as model_mod
from sentiment.analyze.attention import attention_examples, log_attention
from sentiment.analyze.eda import Exploration, explore, log_exploration
from sentiment.analyze.failures import check_table, log_failures
from sentiment.analyze.render import pct
from sentiment.config import Config, ModelConfig, apply_overrides, validate
from sentiment.errors import UserError
from sentiment.tracking import keys

PARTS = ("eda", "attention", "failures")
MAX_USER_TEXTS = 50  # each --texts review costs one forward pass and three artifacts


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
        raise UserError(
            f"--texts file {path!r} does not exist or is not a file; pass a text file with one review per line"
        )
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read --texts file {path!r} ({' '.join(str(exc).split())[:200]}); use UTF-8 text, one review per "
            "line"
        ) from None
    texts = [t for t in (data_mod.clean_text(line) for line in lines) if t]
    if not texts:
        raise UserError(f"--texts file {path!r} has no reviews; write one review per line")
    if len(texts) > MAX_USER_TEXTS:
        raise UserError(
            f"--texts file {path!r} has {len(texts)} reviews; attention maps are for at most {MAX_USER_TEXTS}"
        )
    return texts


@dataclass(frozen=True)
class AnalyzeOutcome:
    run_id: str
    parts: tuple[str, ...]
    split: str
    exploration: Exploration | None
    failures: dict | None
    attention: pd.DataFrame | None


def analysis_config(
    base: Config | None, data_source: str | None, overrides: dict | None, tokenizer_name: str
) -> Config:
    """The model's logged config (or the defaults without a model), with the given overrides."""
    if base is None:
        base = replace(Config(), model=replace(ModelConfig(), name=tokenizer_name))
    return validate(apply_overrides(base, {"data.source": data_source, **(overrides or {})}))


@dataclass(frozen=True)
class AnalyzePlan:
    """What `plan_analyze` checked and loaded before any run exists."""

    parts: tuple[str, ...]
    split: str
    model_uri: str | None
    loaded: object | None  # model.LoadedPackage
    config: Config
    splits: data_mod.Splits | None  # None when a reused predictions table is all that is needed
    texts: tuple[str, ...]
    predictions_run: str | None
    tokenizer_name: str
    examples_per_group: int
    reused: pd.DataFrame | None = None  # the predictions table of ``predictions_run``, when reused


def plan_analyze(
    model_uri: str | None = None,
    data_source: str | None = None,
    parts: Sequence[str] = PARTS,
    split: str = "test",
    texts: Sequence[str] = (),
    predictions_run: str | None = None,
    tokenizer_name: str | None = None,
    examples_per_group: int = 1,
    overrides: dict | None = None,
) -> AnalyzePlan:
    """Every problem with the inputs, found before the run exists: parts and texts, the model
    (loaded), the reused run, the config, max_length against the model, the data (loaded).

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
    model_uri, split = _check_inputs(parts, texts, examples_per_group, model_uri, split, predictions_run)
    loaded = model_mod.load_package(model_uri) if model_uri else None
    tokenizer_name = tokenizer_name or model_mod.OFFLINE_MINILM
    base = loaded.config if loaded else (tracking.read_run_config(predictions_run) if predictions_run else None)
    config = analysis_config(base, data_source, overrides, tokenizer_name)
    if loaded:
        model_mod.check_max_length(loaded.model.config, config.data.max_length, model_uri)
    elif "eda" in parts:
        model_mod.load_tokenizer(tokenizer_name)  # an unknown --tokenizer fails here, not in the run
    device_mod.pick_runtime(config.train)
    splits = data_mod.load_splits(config.data, config.seed) if "eda" in parts or not predictions_run else None
    reused = None
    if predictions_run and ("failures" in parts or "attention" in parts):
        hint = "pass an evaluate or train run that logged predictions"
        reused = tracking.load_run_table(predictions_run, f"predictions/{split}.parquet", hint=hint)
        check_table(reused)
    return AnalyzePlan(
        tuple(parts),
        split,
        model_uri,
        loaded,
        config,
        splits,
        tuple(texts),
        predictions_run,
        tokenizer_name,
        examples_per_group,
        reused,
    )


def run_analyze(plan: AnalyzePlan, tracker: tracking.Tracker) -> AnalyzeOutcome:
    """The analyze stage: exploration, failure analysis and attention maps in the tracker's run."""
    p, loaded, config, parts, split = plan, plan.loaded, plan.config, plan.parts, plan.split
    if loaded and loaded.model_id:
        tracker.link_model(loaded.model_id)
    tags = {
        keys.KIND: "analyze",
        keys.PARTS: ",".join(parts),
        keys.SPLIT: split,
        keys.MODEL_URI: p.model_uri,
        keys.MODEL_RUN_ID: tracking.model_run_id(p.model_uri, loaded.model_id) if loaded else None,
        keys.PREDICTIONS_RUN_ID: p.predictions_run,
    }
    tracker.set_tags({k: v for k, v in tags.items() if v})
    tracker.log_config(config)
    exploration = failures = attention = table = None
    if p.splits is not None:
        tracker.log_splits(p.splits, only=None if "eda" in parts or split == "all" else split)
    if "eda" in parts:
        tokenizer = loaded.tokenizer if loaded else model_mod.load_tokenizer(p.tokenizer_name)
        exploration = explore(p.splits, tokenizer, config.data.max_length, p.model_uri or p.tokenizer_name)
        log_exploration(exploration, tracker)
    if "failures" in parts or "attention" in parts:
        table = p.reused if p.reused is not None else _predictions(tracker, split, loaded, p.splits, config)
    if "failures" in parts:
        failures = log_failures(table, split, tracker)
    if "attention" in parts:
        examples = attention_examples(table, p.texts, p.examples_per_group)
        attention = log_attention(loaded.model, loaded.tokenizer, examples, config, tracker)
    return AnalyzeOutcome(tracker.run_id, tuple(parts), split, exploration, failures, attention)


def _check_inputs(
    parts, texts, examples_per_group: int, model_uri: str | None, split: str, predictions_run: str | None
) -> tuple[str | None, str]:
    """Every problem with the inputs before any work; returns the model URI and split to use (a
    reused evaluate run's own split, and its model for attention when none is given)."""
    if texts and "attention" not in parts:
        raise UserError("--texts is for attention maps; add attention to --only or drop --texts")
    if examples_per_group < 0:
        raise UserError(f"--attention-examples must be >= 0, got {examples_per_group}")
    if predictions_run:
        source_tags = tracking.run_tags(predictions_run)
        split = source_tags.get(keys.SPLIT, split)
        model_uri = model_uri or (source_tags.get(keys.MODEL_URI) if "attention" in parts else None)
    data_mod.check_split(split)
    needs_model = "attention" in parts or ("failures" in parts and not predictions_run)
    if needs_model and not model_uri:
        raise UserError(
            "attention maps and failure analysis need --model-uri (failures also --predictions-run RUN_ID); "
            "for data exploration alone use --only eda"
        )
    return model_uri, split


def _predictions(tracker: tracking.Tracker, split: str, loaded, splits, config: Config) -> pd.DataFrame:
    """Predict the split and log it as evaluate does."""
    runtime = device_mod.pick_runtime(config.train)
    frame = data_mod.select_split(splits, split)
    reviews = tokens.encode_reviews(frame, loaded.tokenizer, config.data.max_length, config.data.truncation)
    table = evaluate.predict_table(loaded.model.to(runtime.device), reviews, runtime, config.train.eval_batch_size)
    evaluate.log_evaluation(table, split, tracker, seed=config.seed)
    return table


def report_lines(outcome: AnalyzeOutcome) -> list[str]:
    """What the CLI prints: where to look and the headline numbers."""
    lines = [f"run id:      {outcome.run_id}", f"parts:       {', '.join(outcome.parts)}"]
    if outcome.exploration is not None:
        every = outcome.exploration.summary_rows()[-1]
        lines.append(
            f"eda:         {every['examples']:,} reviews, {outcome.exploration.vocabulary_size:,} distinct words, "
            f"median {every['tokens_median']:.0f} tokens, {pct(every['truncated_share'])} above max_length "
            f"{outcome.exploration.max_length} -> eda/"
        )
    if outcome.failures is not None:
        f = outcome.failures
        lines.append(
            f"failures:    {f['errors']:,} errors in {f['reviews']:,} {outcome.split} reviews "
            f"({pct(f['error_rate'])}): {f['false_positives']:,} false positives, {f['false_negatives']:,} false "
            f"negatives, ECE {f['ece']:.4f} -> failures/summary.md"
        )
    if outcome.attention is not None:
        lines.append(f"attention:   {len(outcome.attention)} reviews -> attention/*.html, attention/*.png")
    return lines
