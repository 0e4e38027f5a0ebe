"""`sentiment evidence`: the runs behind every published number, kept in the repository.

MLFLOW_TRACKING_URI=http://127.0.0.1:5000 sentiment evidence add RUN_ID [RUN_ID ...]
sentiment evidence render [--check]       # make results: documents from the store alone
sentiment evidence ui [--port 5050]       # make evidence-ui: the store in the MLflow UI
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from sentiment.errors import UserError

STORE_HELP = "the evidence store (an MLflow file store folder)"


@click.group()
def evidence() -> None:
    """The evidence store: runs every results document cites, ids kept, no weights or review text."""


@evidence.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--store", default="experiments/evidence", show_default=True, help=STORE_HELP)
def add(run_ids: tuple[str, ...], store: str) -> None:
    """Copy runs (each with its children) from the tracking server (MLFLOW_TRACKING_URI) into the store."""
    from sentiment import tracking

    source = tracking.connect()
    root = Path(store)
    if Path(tracking.tracking_uri().removeprefix("file://")).resolve() == root.resolve():
        raise UserError(
            f"MLFLOW_TRACKING_URI points at the store {store} itself; point it at the server that holds the runs"
        )
    published = tracking.publish_evidence(list(run_ids), root)
    sizes = tracking.evidence_run_sizes(root)
    for item in published:
        role = f"child of {item.parent_id[:8]}" if item.parent_id else "run"
        click.echo(
            f"{role:<17} {item.run_id}: {item.files} artifact(s), {sizes.get(item.run_id, 0) / 1e3:,.0f} kB in the "
            "store"
        )
    total = sum(sizes.values())
    click.echo(
        f"copied {len(published)} run(s) from {source} into {store} ({len(sizes)} runs, {total / 1e6:.2f} MB in all)"
    )


@evidence.command()
@click.option("--check", is_flag=True, help="write nothing; exit 1 when a committed document differs from its render")
@click.option("--root", default=".", show_default=True, help="the repository root")
def render(check: bool, root: str) -> None:
    """Render every results document (experiments/results.yaml) from the store alone."""
    from sentiment.report import results

    base = Path(root)
    rendered = results.render(base)
    if check:
        problems = results.check(rendered, base)
        for line in problems:
            click.echo(f"stale: {line}", err=True)
        if problems:
            raise UserError("the documents differ from the evidence store; run `make results` and commit the result")
        click.echo(f"{len(rendered)} document(s) match their render from the evidence store")
        return
    for path in results.write(rendered, base):
        click.echo(f"wrote {path}")


@evidence.command()
@click.option("--store", default="experiments/evidence", show_default=True, help=STORE_HELP)
@click.option("--port", default=5050, show_default=True, type=int, help="port of the MLflow UI")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
def ui(store: str, port: int, host: str) -> None:
    """Open the store in the MLflow UI (migrated, ids kept, into .sentiment/evidence-ui.db; artifacts served from the
    store)."""
    from sentiment import tracking

    root = Path(store)
    tracking.use_store(root)
    database = tracking.open_evidence_ui_database(root, Path(".sentiment") / "evidence-ui.db")
    click.echo(f"the evidence store in the MLflow UI: http://{host}:{port} (Ctrl-C stops it)")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        database,
        "--artifacts-destination",
        str(root.resolve()),
        "--host",
        host,
        "--port",
        str(port),
    ]
    try:
        subprocess.run(command, env=env, check=False)
    except KeyboardInterrupt:
        pass
