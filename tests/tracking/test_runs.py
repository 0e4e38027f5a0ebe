"""tracking.runs: what a run's tracker does against the real server."""

from __future__ import annotations

import pytest


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's schema hints about the toy frame
def test_sibling_runs_log_the_same_dataset_at_once(tracking_env):
    """Children of a grid start together and log the same splits: the server's get-or-create of
    a dataset races, and no child may fail for it."""
    import threading

    import mlflow
    import pandas as pd

    from sentiment.tracking.runs import _log_input

    frame = pd.DataFrame({"id": ["a", "b"], "text": ["good", "bad"], "label": [1, 0]})
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    errors: list[BaseException] = []
    run_ids: list[str] = []
    for round_ in range(3):  # a fresh dataset each round, so every round starts with the race
        data = frame.assign(text=frame.text + str(round_))
        barrier = threading.Barrier(8)

        def child() -> None:
            try:
                with mlflow.start_run(experiment_id=experiment_id) as run:
                    run_ids.append(run.info.run_id)
                    dataset = mlflow.data.from_pandas(
                        data, source="reviews.csv", targets="label", name="reviews.csv-train"
                    )
                    barrier.wait()
                    _log_input(dataset, "training")
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=child) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert len(run_ids) == 24
    assert all(len(client.get_run(r).inputs.dataset_inputs) == 1 for r in run_ids)
