"""`sentiment promote`, `score` and `export`: the registry's versions compared, used at scale and
exported."""

from __future__ import annotations

from pathlib import Path

import click

from sentiment.cli_options import choice, promotion_rule_options


@click.command()
@click.option("--name", required=True, help="registered model name")
@click.option(
    "--version", "version", required=True, help="the candidate version (compared on its own run's test reviews)"
)
@click.option(
    "--against", default="", help="compare with this version instead of the champion (compare only: no alias moves)"
)
@promotion_rule_options
@click.option("--compare-only", is_flag=True, help="log and print the comparison, move no alias")
def promote(name: str, version: str, against: str, promote_if: str, promote_alpha: float, compare_only: bool) -> None:
    """Compare a registered version with the champion on the same reviews; move champion by the rule."""
    from sentiment.promote import run_promote

    decision = run_promote(name, version, promote_if, promote_alpha, against or None, compare_only)
    click.echo(decision.line())


@click.command()
@click.option(
    "--model-uri", required=True, help="models:/name@alias, runs:/..., models:/m-..., or a packaged model folder"
)
@click.option("--input", "input_path", required=True, help="reviews to score: .parquet, .csv or .jsonl, any size")
@click.option(
    "--output", required=True, help="the scored .parquet file (input columns + label, score, probability, reason)"
)
@click.option("--text-column", default="", help="the column holding the reviews (default: text or review)")
@click.option(
    "--chunk-rows",
    default=5_000,
    show_default=True,
    type=int,
    help="rows read, scored and written at a time (bounds memory)",
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=int,
    help="reviews per forward pass (longest first inside a chunk)",
)
@click.option(
    "--precision",
    type=choice(("auto", "fp32", "bf16", "native", "fp16")),
    default="auto",
    show_default=True,
    help="auto: fp32 on CPU, bf16/fp16 on CUDA; bf16 autocasts on CPU too",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
def score(
    model_uri: str,
    input_path: str,
    output: str,
    text_column: str,
    chunk_rows: int,
    batch_size: int,
    precision: str,
    device: str,
) -> None:
    """Score a review file of any size in chunks; resumes after a crash from the last finished chunk."""
    from sentiment import score as score_mod
    from sentiment import tracking

    job = score_mod.plan_score(model_uri, input_path, output, text_column, chunk_rows, batch_size)
    if ":/" in model_uri:
        tracking.connect()
    scorer = score_mod.Scorer(model_uri, precision.lower(), device, batch_size)
    outcome = score_mod.score_file(job, scorer, score_mod.progress_printer())
    resumed = f", {outcome.resumed_chunks} chunks kept from an interrupted run" if outcome.resumed_chunks else ""
    click.echo(
        f"wrote {outcome.output}: {outcome.rows:,} rows ({outcome.unscored:,} not scored, see column reason){resumed}; "
        f"{outcome.reviews_per_s:.1f} reviews/s"
    )


@click.command()
@click.option("--name", required=True, help="registered model name")
@click.option(
    "--version", "version", required=True, help="the version to export (measured on its own run's test reviews)"
)
@click.option(
    "--quantize",
    type=click.Choice(("int8-per-channel", "int8")),
    default="int8-per-channel",
    show_default=True,
    help="dynamic int8 quantization of the Linear layers, for CPU: one weight scale per output channel (held within "
    "half a point of fp32 in benchmarks/RESULTS.md), or one per matrix",
)
@promotion_rule_options
@click.option("--batch-size", default=32, show_default=True, type=int, help="reviews per forward pass while measuring")
@click.option(
    "--output-dir", default=".sentiment/exports", show_default=True, help="local folder for the exported package"
)
def export(
    name: str, version: str, quantize: str, promote_if: str, promote_alpha: float, batch_size: int, output_dir: str
) -> None:
    """Register a faster CPU sibling (int8) of a version, with its accuracy delta and speed-up measured on the same
    reviews."""
    from sentiment.export import run_export

    outcome = run_export(name, version, quantize, promote_if, promote_alpha, Path(output_dir), batch_size)
    click.echo(outcome.line())
    click.echo(outcome.decision.line())
