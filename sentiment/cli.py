"""The `sentiment` command: builds a config, opens an MLflow run, calls one stage.

sentiment train --preset quick --register-as imdb-sentiment
sentiment evaluate --model-uri models:/imdb-sentiment@champion --data sample --split test
sentiment tune --space experiments/search/cpu.yaml --trials 30
"""

from __future__ import annotations

import os
import sys

import click

from sentiment.cli_evidence import evidence
from sentiment.cli_registry import export, promote, score
from sentiment.cli_study import ablate, analyze, report, tune
from sentiment.cli_train import combine, evaluate, predict, sync, train
from sentiment.errors import Interrupted, TrainingError, UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-v", "--verbose", count=True, help="show third-party logging: -v INFO, -vv DEBUG (or SENTIMENT_LOG_LEVEL)"
)
def cli(verbose: int) -> None:
    """Fine-tune transformer encoders for movie-review sentiment, tracked in MLflow."""
    from sentiment import logs

    logs.configure(verbose)


for command in (
    train,
    combine,
    sync,
    evaluate,
    predict,
    analyze,
    ablate,
    tune,
    report,
    promote,
    score,
    export,
    evidence,
):
    cli.add_command(command)


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
