"""`sentiment train`, `sync`, `evaluate` and `predict`: one model trained, its journal replayed, a model
scored on a split or on a few texts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from sentiment.cli_options import choice, config_options, overrides_from, promotion_rule_options, start_line
from sentiment.config import PRESETS, PROMOTION_RULES, build_config, default_run_name, short_name
from sentiment.errors import UserError
from sentiment.options import options as option_table


# long function: 30 lines of click options; the body is one ordered path: checks, torchrun setup, the run, its report
@click.command()
@click.option(
    "--preset",
    type=choice(PRESETS),
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
    overrides = overrides_from(options)
    if resume and any(v is not None for v in overrides.values()):
        raise UserError("--resume continues a run with its logged config; drop the other training options")
    config = None if resume else build_config(preset, overrides)
    from sentiment.preflight import check_inputs

    inputs = None
    if config is not None and ":/" not in config.model.name:  # (an MLflow model URI needs the server first)
        inputs = check_inputs(config)  # everything that can be wrong, found before the run exists
    from sentiment import distributed, tracking
    from sentiment.promote import RegisterRequest
    from sentiment.train import StopOnSignal, TrainRequest, run_train

    stop = StopOnSignal().install()
    dist = distributed.init()  # torchrun / accelerate launch: one process per rank
    registry = RegisterRequest(register_as, promote_if, promote_alpha) if register_as else None
    request = TrainRequest(Path(output_dir), resume=bool(resume), registry=registry, should_stop=stop, dist=dist)
    if resume and dist.enabled:
        raise UserError("--resume runs in one process: resume a distributed run without torchrun, or start it again")
    try:
        if not dist.is_main:  # only rank 0 talks to MLflow
            with distributed.rank_failures(dist):
                rank_request = replace(request, workdir=Path(output_dir) / f"rank-{dist.rank}", inputs=inputs)
                run_train(config, tracking.NullTracker(), rank_request)
            return
        if config is not None:
            if inputs is None:  # a model given as an MLflow URI is checked on the server, before the run exists
                tracking.connect()
                inputs = check_inputs(config, dist)
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
            start_line(tracker, run_name or f"resumed {resume}")
            config = config or tracking.read_run_config(tracker.run_id, required=True)
            workdir = Path(output_dir) / tracker.run_id
            with distributed.rank_failures(dist):
                outcome = run_train(config, tracker, replace(request, workdir=workdir, inputs=inputs))
        _report_train(outcome)
    finally:
        distributed.shutdown()


@click.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option(
    "--data", default="", help="the file the members were split from, when it moved (default: as they logged it)"
)
@click.option(
    "--weight-step", default=0.05, show_default=True, type=float, help="grid step of the weights tried on validation"
)
@click.option("--register-as", default="", help="register the combined model under this name (alias candidate)")
@promotion_rule_options
@click.option("--run-name", default="", help="MLflow run name")
@click.option("--output-dir", default=".sentiment/runs", show_default=True, help="local folder for the package")
def combine(
    run_ids: tuple[str, ...],
    data: str,
    weight_step: float,
    register_as: str,
    promote_if: str,
    promote_alpha: float,
    run_name: str,
    output_dir: str,
) -> None:
    """Combine trained runs (e.g. a fine-tuned encoder and TF-IDF) into one model, weighted on validation."""
    from sentiment import tracking
    from sentiment.promote import RegisterRequest
    from sentiment.train.combine import plan_combine, run_combine

    tracking.connect()
    plan = plan_combine(list(run_ids), data or None, weight_step)  # before the run exists
    registry = RegisterRequest(register_as, promote_if, promote_alpha) if register_as else None
    name = run_name or default_run_name("combined", *(short_name(m.family) for m in plan.members))
    again = "sentiment combine " + " ".join(run_ids)  # (nothing to resume: combining again takes seconds)
    with tracking.open_run(run_name=name, journal_root=Path(output_dir), resume_command=again) as tracker:
        start_line(tracker, name)
        workdir = Path(output_dir) / tracker.run_id
        workdir.mkdir(parents=True, exist_ok=True)
        outcome = run_combine(plan, tracker, workdir, registry)
    _report_train(outcome)


@click.command()
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


@click.command()
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
        start_line(tracker, name)
        metrics = run_evaluate(plan, tracker)
    click.echo(f"run id:     {tracker.run_id}")
    for key in ("accuracy", "f1_macro", "roc_auc", "ece", "ece_calibrated", "loss"):
        name = f"{split}/{key}"
        if name in metrics:
            click.echo(f"{name:<20}{metrics[name]:.4f}")


@click.command()
@click.option("--model-uri", required=True, help="models:/name@alias, runs:/..., models:/m-...")
@click.argument("texts", nargs=-1, required=True)
def predict(model_uri: str, texts: tuple[str, ...]) -> None:
    """Load a logged model the way a user would (mlflow.pyfunc) and classify TEXTS."""
    from sentiment import tracking

    tracking.connect()
    for text, row in zip(texts, tracking.load_pyfunc(model_uri).predict(list(texts)).itertuples()):
        click.echo(f"{row.label:<9}{row.score:.3f}  {text[:80]}")
