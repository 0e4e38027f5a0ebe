"""The counts a training run logs once are params; older runs' metrics still read."""

from sentiment.tracking import counts


def test_counts_are_params_named_as_the_reports_read_them():
    params = {
        **counts.split_sizes({"train": 21594, "val": 2399, "test": 23976}),
        **counts.parameter_counts(22_700_000, 385),
    }
    assert params == {
        "data.train_reviews": 21594,
        "data.val_reviews": 2399,
        "data.test_reviews": 23976,
        "model.parameters": 22_700_000,
        "model.trainable_parameters": 385,
    }
    logged = {k: str(v) for k, v in params.items()}  # MLflow keeps params as text
    assert counts.count(logged, {}, counts.TRAIN_REVIEWS) == 21594
    assert counts.count(logged, {}, counts.TRAINABLE_PARAMETERS) == 385


def test_a_run_logged_before_the_move_reads_from_its_metric():
    metrics = {"data/train_reviews": 21594.0, "model/trainable_parameters": 385.0}
    assert counts.count({}, metrics, counts.TRAIN_REVIEWS) == 21594
    assert counts.count({}, metrics, counts.TRAINABLE_PARAMETERS) == 385
    assert counts.count({}, metrics, counts.TEST_REVIEWS) is None
    assert counts.count({"data.train_reviews": "400"}, metrics, counts.TRAIN_REVIEWS) == 400  # the param wins
