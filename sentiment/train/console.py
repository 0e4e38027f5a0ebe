"""What a training prints while it runs, on stderr (stdout keeps the final summary): a tqdm bar
with the loss, batches/s and ETA on a terminal; a plain line every tenth of an epoch when stderr
is not a terminal, so the logs of `mlflow run`, CI and `nohup` stay readable; one line per epoch.

    sentiment train --preset quick 2> train.log     (plain lines)
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence

from tqdm.auto import tqdm

LINES_PER_EPOCH = 10  # plain progress lines per epoch when stderr is not a terminal


def on_terminal() -> bool:
    return sys.stderr.isatty()


def say(line: str) -> None:
    """One line on stderr that does not break a progress bar."""
    tqdm.write(line, file=sys.stderr)


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class EpochProgress:
    """Iterates an epoch's remaining batches and shows where it stands.

    Args:
        batches: the batches still to train in this epoch.
        epoch, epochs: which epoch of how many.
        total: batches in the whole epoch (a resumed epoch has done some already).
        show: False on ranks other than 0 of a distributed job.
    """

    def __init__(self, batches: Sequence, epoch: int, epochs: int, total: int, show: bool = True) -> None:
        self.batches, self.epoch, self.epochs, self.total = batches, epoch, epochs, total
        self.bar = tqdm(
            batches,
            desc=f"epoch {epoch}/{epochs}",
            disable=not (show and on_terminal()),
            leave=False,
            unit="batch",
            file=sys.stderr,
        )
        self.every = max(1, math.ceil(total / LINES_PER_EPOCH)) if show and not on_terminal() else 0
        self.first = total - len(batches)  # batches done before this process (a resume)
        self.started = time.perf_counter()
        self.loss = float("nan")

    def __iter__(self):
        return iter(self.bar)

    def loss_is(self, value: float) -> None:
        self.loss = value
        self.bar.set_postfix(loss=f"{value:.4f}")

    def step_done(self, done: int, reviews: int) -> None:
        """After each batch: ``done`` batches of the epoch, ``reviews`` trained by this process."""
        if not self.every or done % self.every or done >= self.total:
            return
        elapsed = time.perf_counter() - self.started
        fresh = done - self.first
        eta = elapsed / fresh * (self.total - done) if fresh else float("nan")
        loss = f"{self.loss:.4f}" if math.isfinite(self.loss) else "-"
        say(
            f"epoch {self.epoch}/{self.epochs}  {done}/{self.total} batches  loss {loss}  "
            f"{reviews / elapsed if elapsed else 0:.1f} reviews/s  ETA {duration(eta) if eta == eta else '?'}"
        )

    def close(self) -> None:
        self.bar.close()


def epoch_line(result, epochs: int, best: bool) -> str:
    """``epoch 1/3  train loss 0.4123 acc 0.8120  val loss 0.3011 acc 0.9050 (best)  312 reviews/s  4m12s``"""
    mark = " (best)" if best else ""
    return (
        f"epoch {result.epoch}/{epochs}  train loss {result.train_loss:.4f} acc {result.train_accuracy:.4f}  "
        f"val loss {result.val_loss:.4f} acc {result.val_accuracy:.4f}{mark}  "
        f"{result.samples_per_s:.0f} reviews/s  {duration(result.seconds)}"
    )
