"""The outage journal: a run's tracking operations go through an Outbox, which journals them on
disk while the server does not answer and replays them, in order, when it does again (or later
with `sentiment sync`).

    sentiment sync .sentiment/runs/RUN_ID
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

from sentiment.errors import TrainingError, UserError
from sentiment.tracking.connection import connect, reachable, tracking_uri
from sentiment.tracking.queries import last_logged_steps


def _apply(client, run_id: str, op: dict) -> None:
    """Send one journaled operation to the server, addressed by run id (no active run needed)."""
    from mlflow.entities import Metric, Param, RunTag

    kind = op["op"]
    if kind == "metrics":
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step, model_id=mid) for k, v, ts, step, mid in op["points"]],
            synchronous=True,
        )
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()], synchronous=True)
    elif kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in op["params"].items()], synchronous=True)
    elif kind == "artifact":
        client.log_artifact(run_id, op["local"], op["artifact_path"])
    elif kind == "artifacts":
        client.log_artifacts(run_id, op["local"], op["artifact_path"])
    elif kind == "table":
        mlflow.log_table(pd.read_parquet(op["local"]), op["artifact_file"], run_id=run_id)
    elif kind == "end":  # the run ended while the server was away
        client.set_terminated(run_id, op["status"], op["end_time"])
    else:
        raise ValueError(f"unknown journal operation {kind!r}")


class Outbox:
    """Sends a run's tracking operations; while the server is unreachable, journals them on disk
    (``folder/journal.jsonl`` plus copies of files) and replays them in order once it answers
    again, or later with `sentiment sync RUN_DIR`. Training never waits for the server."""

    retry_every_s = 10.0

    def __init__(self, run_id: str, folder: Path) -> None:
        self.run_id = run_id
        self.folder = folder
        self.client = mlflow.MlflowClient()
        self.pending: list[dict] = []
        self.seq = 0
        self.next_try = 0.0

    @property
    def offline(self) -> bool:
        return bool(self.pending)

    def send(self, op: dict) -> None:
        if self.pending:
            self._journal(op)
            self.replay()
            return
        try:
            _apply(self.client, self.run_id, op)
        except Exception:
            if reachable():
                raise
            self._journal(op)
            logging.getLogger("mlflow.system_metrics").setLevel(logging.CRITICAL)
            click_echo(
                f"warning: tracking server {tracking_uri()} is unreachable; training goes on and "
                f"journals to {self.folder} until it answers again"
            )

    def journal(self, op: dict) -> None:
        """Journal an operation without trying the server (known to be away)."""
        self._journal(op)

    def _journal(self, op: dict) -> None:
        op = {**op, "seq": self.seq}
        self.seq += 1
        if "local" in op:  # keep files alive: temp folders and checkpoints change
            dest = self.folder / "files" / f"{op['seq']:06d}" / Path(op["local"]).name  # the name is the artifact's
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if Path(op["local"]).is_dir() else shutil.copy2)(op["local"], dest)
            op["local"] = str(dest)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "journal.jsonl", "a") as handle:
            handle.write(json.dumps(op) + "\n")
        self.pending.append(op)

    def replay(self, force: bool = False) -> bool:
        """Send what the journal holds, in order; True when nothing is left."""
        if not self.pending:
            return True
        if not force and time.monotonic() < self.next_try:
            return False
        self.next_try = time.monotonic() + self.retry_every_s
        if not reachable():
            return False
        sent = 0
        while self.pending:
            try:
                _apply(self.client, self.run_id, self.pending[0])
            except Exception:
                if reachable():
                    raise
                return False
            (self.folder / "acked").write_text(str(self.pending.pop(0)["seq"]))
            sent += 1
        click_echo(f"tracking server is back: replayed {sent} journaled operations")
        return True

    def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until the server answers and the journal is replayed; the run can only
        end on the server."""
        deadline = time.monotonic() + timeout_s
        while not (self.replay(force=True) and reachable()):
            if time.monotonic() > deadline:
                raise TrainingError(
                    f"tracking server {tracking_uri()} still unreachable after {timeout_s:.0f} s; everything is "
                    f"journaled in {self.folder}: run `sentiment sync {self.folder.parent}` when it is back, "
                    f"then `sentiment train --resume {self.run_id}` to finish"
                )
            time.sleep(2.0)


def click_echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync_journal(run_dir: Path) -> int:
    """Replay a journal left by a run that could not reach its server; returns operations sent."""
    journal = run_dir / "journal" / "journal.jsonl"
    if not journal.is_file():
        raise UserError(f"{str(run_dir)!r} has no journal/journal.jsonl to sync")
    connect()
    acked_file = run_dir / "journal" / "acked"
    acked = int(acked_file.read_text()) if acked_file.is_file() else -1
    ops = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    ops = [op for op in ops if op["seq"] > acked]
    run_id = run_dir.name
    client = mlflow.MlflowClient()
    last = last_logged_steps(run_id)
    for op in ops:
        if op["op"] == "metrics":  # a point sent before a crash but never acknowledged: skip it
            op = {**op, "points": [p for p in op["points"] if p[3] > last.get(p[0], -1)]}
            if not op["points"]:
                continue
        _apply(client, run_id, op)
        acked_file.write_text(str(op["seq"]))
    return len(ops)
