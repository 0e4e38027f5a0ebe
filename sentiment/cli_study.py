"""`sentiment analyze`, `ablate`, `tune` and `report`: studies of trained models and the documents built
from their runs."""

from __future__ import annotations

from pathlib import Path

import click

from sentiment.cli_options import Maybe, choice, config_options, overrides_from, promotion_rule_options, start_line
from sentiment.config import default_run_name, short_name
from sentiment.errors import TrainingError, UserError


@click.command()
@click.option("--model-uri", default="", help="model to analyse (runs:/, models:/, folder, Hub id)")
@click.option("--data", default="", help="source to analyse (default: the model's training source)")
@click.option("--only", default="", help="comma-separated parts: eda, attention, failures (default: all)")
@click.option("--texts", default="", help="a text file with one review per line to show attention for")
@click.option("--predictions-run", default="", help="reuse this evaluate run's predictions table")
@click.option(
    "--split", default="test", show_default=True, help="split to predict and analyse: train, val, test or all"
)
@config_options(["max_length", "truncation", "eval_batch_size", "device", "precision", "seed"])
@click.option("--tokenizer", default="", help="tokenizer for exploration without a model (default: offline-minilm)")
@click.option(
    "--attention-examples",
    default=1,
    show_default=True,
    type=int,
    help="reviews per attention group (most confident right/wrong, least confident)",
)
@click.option("--run-name", default="", help="MLflow run name")
def analyze(
    model_uri: str,
    data: str,
    only: str,
    texts: str,
    predictions_run: str,
    split: str,
    tokenizer: str,
    attention_examples: int,
    run_name: str,
    **options,
) -> None:
    """Data exploration, attention maps and failure analysis of a model, as a new run."""
    from sentiment import analyze as analyze_mod
    from sentiment import tracking

    parts = analyze_mod.parse_parts(only)
    user_texts = analyze_mod.read_texts(texts) if texts else []
    tracking.connect()
    plan = analyze_mod.plan_analyze(
        model_uri=model_uri or None,
        data_source=data or None,
        parts=parts,
        split=split.lower(),
        texts=user_texts,
        predictions_run=predictions_run or None,
        tokenizer_name=tokenizer or None,
        examples_per_group=attention_examples,
        overrides=overrides_from(options),
    )
    name = run_name or default_run_name(
        "analyze", short_name(plan.model_uri or "data"), short_name(plan.config.data.source)
    )
    with tracking.open_run(run_name=name) as tracker:
        start_line(tracker, name)
        outcome = analyze_mod.run_analyze(plan, tracker)
    for line in analyze_mod.report_lines(outcome):
        click.echo(line)
    uri = tracking.tracking_uri()
    click.echo(f"MLflow UI:   {f'open {uri}' if uri.startswith('http') else f'mlflow ui --backend-store-uri {uri}'}")


@click.command()
@click.option("--grid", default="experiments/quick.yaml", show_default=True, help="an experiments/*.yaml grid")
@click.option("--max-parallel", default=1, show_default=True, type=int, help="children to run at once")
@click.option("--resume", default="", help="parent run id: re-run only the children that did not finish")
@click.option(
    "--backend", default="", help="run each child on this MLflow Projects backend (local, databricks, kubernetes)"
)
@click.option("--backend-config", default="", help="the backend's config file (JSON), e.g. for kubernetes")
@click.option(
    "--data", default="", help="data source for every child instead of the grid's (e.g. a local copy of IMDB)"
)
def ablate(grid: str, max_parallel: int, resume: str, backend: str, backend_config: str, data: str) -> None:
    """Run an ablation grid as a parent run with one child run per variant and seed, then compare them."""
    from sentiment import ablate as ablate_mod
    from sentiment import tracking

    spec = ablate_mod.load_grid(grid, data=data or None)
    execution = ablate_mod.Execution(
        max_parallel=max_parallel, backend=backend or None, backend_config=backend_config or None
    )
    tracking.connect()
    if resume:
        ablate_mod.check_resumable(resume, spec)
    if not backend:  # a grid whose children would fail fails before its parent exists (a backend has its own data)
        ablate_mod.check_children(spec)
    with tracking.open_run(run_name=f"ablation-{spec.name}", resume_run_id=resume or None) as parent:
        start_line(parent, f"ablation-{spec.name}")
        summary = ablate_mod.run_ablation(spec, parent, execution, resume=bool(resume), report=click.echo)
        click.echo(ablate_mod.format_summary(summary))
        click.echo(f"parent run:      {parent.run_id} ({summary.ran} children run, {summary.skipped} already finished)")
        if summary.failed:
            names = ", ".join(f"{variant}/seed {seed}" for variant, seed, _ in summary.failed)
            raise TrainingError(
                f"{len(summary.failed)} of {len(spec.children())} children failed ({names}); re-run them with: "
                f"sentiment ablate --grid {grid} --resume {parent.run_id}"
            )


# long function: 72 of its lines are click options (one per search setting); the body checks inputs, starts the study
@click.command()
@click.option(
    "--space",
    default="",
    help="a search space file (experiments/search/*.yaml); --resume and --join use the parent's own copy",
)
@click.option(
    "--trials",
    type=Maybe(int),
    default="",
    help="trials in the study in all (default: the space's `trials`, else 20; with --resume or --join: the parent's)",
)
@click.option(
    "--direction",
    type=Maybe(choice(("maximize", "minimize"))),
    default="",
    help="maximize or minimize the objective (default: the space's, else the objective's own)",
)
@click.option(
    "--max-parallel",
    default=1,
    show_default=True,
    type=int,
    help="trials at once on this machine (worker processes sharing the study's storage)",
)
@click.option(
    "--resume",
    default="",
    help="tune parent run id: continue its study; finished trials are kept, trials left running by a killed process "
    "run again",
)
@click.option(
    "--join",
    default="",
    help="tune parent run id: run trials of its study in this process too (e.g. on another machine, with --storage)",
)
@click.option(
    "--storage",
    default="",
    envvar="SENTIMENT_TUNE_STORAGE",
    show_envvar=True,
    help="the study's database URL (default: SQLite .sentiment/tune/optuna.db; postgresql://... to share it)",
)
@click.option(
    "--data", default="", help="data source for every trial instead of the space's (e.g. a local copy of IMDB)"
)
@click.option(
    "--register-as",
    default="",
    help="register the best trial's model under this name (alias candidate; champion by --promote-if)",
)
@promotion_rule_options
@click.option("--run-name", default="", help="name of the parent run")
@click.option(
    "--output-dir",
    default=".sentiment/tune",
    show_default=True,
    help="local folder for the default study database, trial checkpoints and worker logs",
)
def tune(
    space: str,
    trials: int | None,
    direction: str | None,
    max_parallel: int,
    resume: str,
    join: str,
    storage: str,
    data: str,
    register_as: str,
    promote_if: str,
    promote_alpha: float,
    run_name: str,
    output_dir: str,
) -> None:
    """Search hyperparameters with Optuna: a parent run, one child train run per trial (pruned when hopeless),
    the best trial tested once."""
    from sentiment import tracking
    from sentiment import tune as tune_mod
    from sentiment.promote import RegisterRequest
    from sentiment.train import StopOnSignal

    tune_mod.configure_logging()
    if join and register_as:
        raise UserError("--register-as belongs to the process that started (or resumes) the search, not to --join")
    register = RegisterRequest(register_as, promote_if, promote_alpha) if register_as else None
    plan = tune_mod.plan_tune(
        space or None,
        trials,
        direction,
        max_parallel,
        resume or None,
        join or None,
        storage or None,
        data or None,
        register,
        Path(output_dir),
    )
    stop = StopOnSignal().install()
    if plan.mode == "join":
        ran = tune_mod.join_study(plan, stop, click.echo)
        click.echo(
            f"joined run {join}: {ran} trials run here; the parent's own process (or --resume) writes the summary"
        )
        return
    name = run_name or default_run_name("tune", plan.space.name)
    with tracking.open_run(
        run_name=name, resume_run_id=resume or None, resume_command="sentiment tune --resume {run_id}"
    ) as parent:
        start_line(parent, name if not resume else f"resumed {resume}")
        result = tune_mod.run_tune(plan, parent, stop, click.echo)
    for line in tune_mod.report_lines(result, plan.trials):
        click.echo(line)
    uri = tracking.tracking_uri()
    click.echo(
        f"MLflow UI:       {f'open {uri}' if uri.startswith('http') else f'mlflow ui --backend-store-uri {uri}'} (the "
        "parent's child runs are the trials)"
    )


def _run_ids(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command()
@click.option("--run", default="", help="ablation or tune parent, or train/evaluate run id; comma-separate several")
@click.option(
    "--with-run", default="", help="training run(s) to add to a learning-curve grid, scored on the grid's test reviews"
)
@click.option(
    "--format",
    type=choice(("md", "html")),
    default="md",
    show_default=True,
    help="Markdown (figures in <output>_figures/) or self-contained HTML",
)
@click.option("--output", default="", help="file to write (default: report.md or report.html here)")
@click.option("--title", default="", help="the document's title")
def report(run: str, with_run: str, format: str, output: str, title: str) -> None:  # noqa: A002 (the option's name)
    """Render a results document from runs in MLflow; it is also logged to the first run."""
    from sentiment.report import run_report

    fmt = format.lower()
    runs = _run_ids(run)
    path = run_report(runs, _run_ids(with_run), fmt, Path(output or f"report.{fmt}"), title)
    click.echo(f"wrote {path} (also logged to run {runs[0]} as report.{fmt})")
