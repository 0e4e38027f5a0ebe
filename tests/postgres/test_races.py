"""Races SQLite hides, on the PostgreSQL-backed server: concurrent registrations of one model
name, sibling runs logging the same dataset, ablation children training side by side.

    pytest -m postgres tests/postgres/test_races.py
"""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.postgres


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's schema hints about the toy frame
def test_sibling_runs_log_the_same_dataset_at_once(pg_tracking_env, pg_server, postgres):
    """Eight runs log one new dataset at the same moment, three times: no run fails, each run
    records it once, and the store holds each dataset once."""
    import mlflow
    import pandas as pd

    from sentiment.tracking.runs import _log_input

    frame = pd.DataFrame({"id": ["a", "b"], "text": ["good", "bad"], "label": [1, 0]})
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(pg_tracking_env["MLFLOW_EXPERIMENT_NAME"])
    errors: list[BaseException] = []
    run_ids: list[str] = []
    for round_ in range(3):  # a fresh dataset each round, so every round starts with the race
        data = frame.assign(text=frame.text + str(round_))
        barrier = threading.Barrier(8)

        def child() -> None:
            try:
                with mlflow.start_run(experiment_id=experiment_id) as run:
                    run_ids.append(run.info.run_id)
                    dataset = mlflow.data.from_pandas(data, source="reviews.csv", targets="label", name="reviews.csv-train")
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
    rows = postgres.sql(f"SELECT count(*), count(DISTINCT digest) FROM datasets WHERE experiment_id = {int(experiment_id)}", "mlflow")
    assert rows.strip() == "3|3"
