"""The counts a training run records once: the reviews of each split and the model's parameters.

They are constants of a run, so they are logged as params (``data.train_reviews``, ``model.parameters``,
...), not as metrics: the MLflow UI's compare views (parallel coordinates, the charts) then open on
what the runs measured instead of on a constant. Runs logged before they moved (some of them in
experiments/evidence/) have them as metrics (``data/train_reviews``, ``model/parameters``); `count`
reads either.

    from sentiment.tracking import counts
    tracker.log_params(counts.split_sizes(splits.sizes()))
    counts.count(run.params, run.metrics, counts.TRAIN_REVIEWS)  # -> 21594
"""

from __future__ import annotations

TRAIN_REVIEWS = "data.train_reviews"
VAL_REVIEWS = "data.val_reviews"
TEST_REVIEWS = "data.test_reviews"
PARAMETERS = "model.parameters"
TRAINABLE_PARAMETERS = "model.trainable_parameters"


def split_sizes(sizes: dict[str, int]) -> dict[str, int]:
    """``{"train": n, ...}`` (``data.Splits.sizes()``) as the params ``data.train_reviews``, ..."""
    return {f"data.{split}_reviews": int(n) for split, n in sizes.items()}


def parameter_counts(total: int, trainable: int) -> dict[str, int]:
    """The model's parameters and the trainable ones, as params."""
    return {PARAMETERS: int(total), TRAINABLE_PARAMETERS: int(trainable)}


def legacy_metric(key: str) -> str:
    """The metric an older run logged the count as: ``data.train_reviews`` -> ``data/train_reviews``."""
    return key.replace(".", "/", 1)


def count(params: dict, metrics: dict, key: str) -> int | None:
    """A run's count from its params, else from the metric older runs logged; None if it has neither."""
    if key in params:
        return int(float(params[key]))
    legacy = legacy_metric(key)
    return int(metrics[legacy]) if legacy in metrics else None
