"""The `sentiment` command: builds a config, opens an MLflow run, calls one stage.

sentiment train --preset quick --register-as imdb-sentiment
sentiment evaluate --model-uri models:/imdb-sentiment@champion --data sample --split test
sentiment tune --space experiments/search/cpu.yaml --trials 30
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from sentiment.cli_evidence import evidence
from sentiment.config import PRESETS, PROMOTION_RULES, build_config, default_run_name, short_name
from sentiment.config import options as option_table
from sentiment.errors import Interrupted, TrainingError, UserError


class Maybe(click.ParamType):
    """A typed option where an empty string means "not given" (how MLproject passes defaults)."""

    def __init__(self, inner) -> None:
        self.inner = click.types.convert_type(inner)
        self.name = self.inner.name

    def convert(self, value, param, ctx):
        if value is None or value == "":
            return None
        if isinstance(self.inner, click.types.BoolParamType) and isinstance(value, bool):
            return value
        return self.inner.convert(value, param, ctx)


def _choice(values) -> click.Choice:
    return click.Choice(list(values), case_sensitive=False)


def config_options(names):
    """Decorate a command with the config options in ``names`` (all default to the preset).

    Name, type, choices and help come from the option table in sentiment.config, generated from
    the config dataclasses and their field docstrings.
    """
    table = option_table()

    def decorate(func):
        for name in reversed(list(names)):
            option = table[name]
            kind = _choice(option.choices) if option.choices else option.kind
            help_text = option.help.replace("`", "")
            flag = f"--{name.replace('_', '-')}"
            func = click.option(flag, name, type=Maybe(kind), default="", show_default=False, help=help_text)(func)
        return func

    return decorate


def overrides_from(values: dict) -> dict:
    """Given option values (None: not given) by option name -> flat config field -> value."""
    table = option_table()
    return {table[name].field: value for name, value in values.items() if name in table}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-v", "--verbose", count=True, help="show third-party logging: -v INFO, -vv DEBUG (or SENTIMENT_LOG_LEVEL)"
)
def cli(verbose: int) -> None:
    """Fine-tune transformer encoders for movie-review sentiment, tracked in MLflow."""
    from sentiment import logs

    logs.configure(verbose)


def _start_line(tracker, name: str) -> None:
    from sentiment import tracking

    click.echo(f"run {name} ({tracker.run_id}): {tracking.where_to_look(tracker.run_id)}")


@cli.command()
@click.option(
    "--preset",
    type=_choice(PRESETS),
    default="seed",
    show_default=True,
    help="seed: the reference recipe; quick: offline, CPU-sized",
)
@config_options(option_table())
@click.option(
    "--register-as", default="", help="register the model under this name (alias candidate; champion by --promote-if)"
)
@click.option(
    "--promote-if",
    type=click.Choice(PROMOTION_RULES),
    default="significant",
    show_default=True,
    help="move champion when the model beats it on the same test reviews: better, significant (and McNemar p < alpha), "
    "never, always",
)
@click.option(
    "--promote-alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="significance level of --promote-if significant",
)
@click.option("--run-name", default="", help="MLflow run name")
@click.option("--output-dir", default=".sentiment/runs", show_default=True, help="local folder for checkpoints")
@click.option("--resume", default="", help="continue this run id from its latest checkpoint (same run, no step twice)")
def train(
    preset: str,
    register_as: str,
    promote_if: str,
    promote_alpha: float,
    run_name: str,
    output_dir: str,
    resume: str,
    **options,
) -> None:
    """Fine-tune, validate every epoch, log the best model, test it, optionally register it."""
    from sentiment import hub

    overrides = overrides_from(options)
    if resume and any(v is not None for v in overrides.values()):
        raise UserError("--resume continues a run with its logged config; drop the other training options")
    config = None if resume else build_config(preset, overrides)
    if config is not None and hub.is_hub_id(config.model.name):
        hub.resolve_model(config.model.name)  # no internet and not cached: say so in seconds
    from sentiment.preflight import check_inputs

    inputs = None
    if config is not None and ":/" not in config.model.name:  # (an MLflow model URI needs the server first)
        inputs = check_inputs(config)  # everything that can be wrong, found before the run exists
    from sentiment import distributed, tracking
    from sentiment.train import StopOnSignal, run_train

    stop = StopOnSignal().install()
    dist = distributed.init()  # torchrun / accelerate launch: one process per rank
    if resume and dist.enabled:
        raise UserError("--resume runs in one process: resume a distributed run without torchrun, or start it again")
    try:
        if not dist.is_main:  # only rank 0 talks to MLflow
            with distributed.rank_failures(dist):
                run_train(
                    config,
                    tracking.NullTracker(),
                    Path(output_dir) / f"rank-{dist.rank}",
                    should_stop=stop,
                    dist=dist,
                    inputs=inputs,
                )
            return
        if config is not None:
            tracking.connect()
            inputs = inputs or check_inputs(config, dist)
            run_name = run_name or default_run_name(
                preset, short_name(config.model.name), short_name(config.data.source)
            )
        with tracking.open_run(
            run_name=run_name or None,
            system_metrics=True,
            resume_run_id=resume or None,
            journal_root=Path(output_dir),
            skip_logged_steps=bool(resume),  # a resumed run logs no metric step twice
        ) as tracker:
            _start_line(tracker, run_name or f"resumed {resume}")
            config = config or tracking.read_run_config(tracker.run_id, required=True)
            workdir = Path(output_dir) / tracker.run_id
            with distributed.rank_failures(dist):
                outcome = run_train(
                    config,
                    tracker,
                    workdir,
                    register_as=register_as or None,
                    resume=bool(resume),
                    should_stop=stop,
                    dist=dist,
                    promote_if=promote_if,
                    promote_alpha=promote_alpha,
                    inputs=inputs,
                )
        _report_train(outcome)
    finally:
        distributed.shutdown()


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def sync(run_dir: Path) -> None:
    """Replay the journal a run kept while its tracking server was unreachable (.sentiment/runs/RUN_ID)."""
    from sentiment import tracking

    sent = tracking.sync_journal(run_dir)
    click.echo(f"replayed {sent} journaled operations to run {run_dir.name}")


def _report_train(outcome) -> None:
    from sentiment import tracking

    best = outcome.history.best_val_accuracy
    click.echo(f"run id:          {outcome.run_id}")
    click.echo(f"best val acc:    {best:.4f} (epoch {outcome.history.best_epoch})")
    if outcome.test_metrics:
        m = outcome.test_metrics
        click.echo(
            f"test accuracy:   {m['test/accuracy']:.4f} (95% CI "
            f"{m['test/accuracy_ci_low']:.4f}-{m['test/accuracy_ci_high']:.4f}), macro F1 {m['test/f1_macro']:.4f}"
        )
    click.echo(f"logged model:    {outcome.model_uri}")
    if outcome.registered is not None:
        reg = outcome.registered
        aliases = "candidate, champion" if reg.champion else "candidate"
        click.echo(f"registered:      {reg.uri} (aliases: {aliases}); load with models:/{reg.name}@champion")
        if reg.decision is not None:
            click.echo(reg.decision.line())
    uri = tracking.tracking_uri()
    ui = f"open {uri}" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"
    click.echo(f"MLflow UI:       {ui}")


@cli.command()
@click.option(
    "--model-uri", required=True, help="runs:/..., models:/name@alias, models:/m-..., a local folder, or a Hub id"
)
@click.option("--data", default="", help="source to evaluate on (default: the model's training source)")
@click.option("--split", default="test", show_default=True, help="train, val, test or all")
@config_options(
    ["max_length", "truncation", "test_size", "split_seed", "eval_batch_size", "device", "precision", "seed"]
)
@click.option("--run-name", default="", help="MLflow run name")
def evaluate(model_uri: str, data: str, split: str, run_name: str, **options) -> None:
    """Evaluate a logged, registered, local or Hub model on a split, as a new run."""
    from sentiment import tracking
    from sentiment.evaluate import plan_evaluate, run_evaluate

    overrides = overrides_from(options)
    tracking.connect()
    plan = plan_evaluate(model_uri, data or None, split.lower(), overrides)  # before the run exists
    name = run_name or default_run_name(
        "evaluate", short_name(model_uri), short_name(plan.config.data.source), plan.split
    )
    with tracking.open_run(run_name=name) as tracker:
        _start_line(tracker, name)
        metrics = run_evaluate(plan, tracker)
    click.echo(f"run id:     {tracker.run_id}")
    for key in ("accuracy", "f1_macro", "roc_auc", "ece", "ece_calibrated", "loss"):
        name = f"{split}/{key}"
        if name in metrics:
            click.echo(f"{name:<20}{metrics[name]:.4f}")


@cli.command()
@click.option("--model-uri", required=True, help="models:/name@alias, runs:/..., models:/m-...")
@click.argument("texts", nargs=-1, required=True)
def predict(model_uri: str, texts: tuple[str, ...]) -> None:
    """Load a logged model the way a user would (mlflow.pyfunc) and classify TEXTS."""
    from sentiment import tracking

    tracking.connect()
    for text, row in zip(texts, tracking.load_pyfunc(model_uri).predict(list(texts)).itertuples()):
        click.echo(f"{row.label:<9}{row.score:.3f}  {text[:80]}")


@cli.command()
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
        _start_line(tracker, name)
        outcome = analyze_mod.run_analyze(plan, tracker)
    for line in analyze_mod.report_lines(outcome):
        click.echo(line)
    uri = tracking.tracking_uri()
    click.echo(f"MLflow UI:   {f'open {uri}' if uri.startswith('http') else f'mlflow ui --backend-store-uri {uri}'}")


@cli.command()
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
        _start_line(parent, f"ablation-{spec.name}")
        summary = ablate_mod.run_ablation(spec, parent, execution, resume=bool(resume), report=click.echo)
        click.echo(ablate_mod.format_summary(summary))
        click.echo(f"parent run:      {parent.run_id} ({summary.ran} children run, {summary.skipped} already finished)")
        if summary.failed:
            names = ", ".join(f"{variant}/seed {seed}" for variant, seed, _ in summary.failed)
            raise TrainingError(
                f"{len(summary.failed)} of {len(spec.children())} children failed ({names}); re-run them with: "
                f"sentiment ablate --grid {grid} --resume {parent.run_id}"
            )


@cli.command()
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
    type=Maybe(_choice(("maximize", "minimize"))),
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
@click.option(
    "--promote-if",
    type=click.Choice(PROMOTION_RULES),
    default="significant",
    show_default=True,
    help="the rule, as for train --register-as",
)
@click.option(
    "--promote-alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="significance level of --promote-if significant",
)
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
        _start_line(parent, name if not resume else f"resumed {resume}")
        result = tune_mod.run_tune(plan, parent, stop, click.echo)
    for line in tune_mod.report_lines(result, plan.trials):
        click.echo(line)
    uri = tracking.tracking_uri()
    click.echo(
        f"MLflow UI:       {f'open {uri}' if uri.startswith('http') else f'mlflow ui --backend-store-uri {uri}'} (the "
        "parent's child runs are the trials)"
    )


cli.add_command(evidence)


def _run_ids(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@cli.command()
@click.option("--run", default="", help="ablation or tune parent, or train/evaluate run id; comma-separate several")
@click.option(
    "--with-run", default="", help="training run(s) to add to a learning-curve grid, scored on the grid's test reviews"
)
@click.option(
    "--format",
    type=_choice(("md", "html")),
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


@cli.command()
@click.option("--name", required=True, help="registered model name")
@click.option(
    "--version", "version", required=True, help="the candidate version (compared on its own run's test reviews)"
)
@click.option(
    "--against", default="", help="compare with this version instead of the champion (compare only: no alias moves)"
)
@click.option(
    "--promote-if",
    type=click.Choice(PROMOTION_RULES),
    default="significant",
    show_default=True,
    help="the rule, as for train --register-as",
)
@click.option(
    "--promote-alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="significance level of the rule significant",
)
@click.option("--compare-only", is_flag=True, help="log and print the comparison, move no alias")
def promote(name: str, version: str, against: str, promote_if: str, promote_alpha: float, compare_only: bool) -> None:
    """Compare a registered version with the champion on the same reviews; move champion by the rule."""
    from sentiment.promote import run_promote

    decision = run_promote(name, version, promote_if, promote_alpha, against or None, compare_only)
    click.echo(decision.line())


@cli.command()
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
    type=_choice(("auto", "fp32", "bf16", "native", "fp16")),
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


@cli.command()
@click.option("--name", required=True, help="registered model name")
@click.option(
    "--version", "version", required=True, help="the version to export (measured on its own run's test reviews)"
)
@click.option(
    "--quantize",
    type=click.Choice(("int8",)),
    default="int8",
    show_default=True,
    help="dynamic int8 quantization of the Linear layers, for CPU",
)
@click.option(
    "--promote-if",
    type=click.Choice(PROMOTION_RULES),
    default="significant",
    show_default=True,
    help="the rule, as for train --register-as",
)
@click.option(
    "--promote-alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="significance level of the rule significant",
)
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and an exit code, never a traceback."""
    try:
        cli.main(args=argv, prog_name="sentiment", standalone_mode=False)
    except click.exceptions.Abort:
        _fail_outer_run("interrupted by the user", "KILLED")
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        message = " ".join(exc.format_message().split())
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see {exc.ctx.command_path} --help)"
        _fail_outer_run(message)
        click.echo(f"error: {message}{hint}", err=True)
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        kept = (
            "finished trials are kept"
            if exc.resume_hint.startswith("sentiment tune")
            else "the training state is saved"
        )
        click.echo(
            f"error: {exc}; {kept}; resume with: {exc.resume_hint or 'sentiment train --resume RUN_ID'}", err=True
        )
        sys.exit(exc.exit_code)
    except (UserError, TrainingError) as exc:
        message = " ".join(str(exc).split())
        _fail_outer_run(message)
        click.echo(f"error: {message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _fail_outer_run("interrupted by the user", "KILLED")
        click.echo("error: interrupted", err=True)
        sys.exit(130)


def _fail_outer_run(message: str, status: str = "FAILED") -> None:
    """Under `mlflow run` the run exists before we start: never leave it RUNNING."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    from sentiment import tracking

    try:
        tracking.connect()
    except UserError:
        return
    tracking.fail_run(run_id, message, status)


if __name__ == "__main__":
    main()
