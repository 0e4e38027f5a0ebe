"""Races SQLite hides, on the PostgreSQL-backed server: concurrent registrations of one model
name, sibling runs logging the same dataset, ablation children training side by side.

    pytest -m postgres tests/postgres/test_races.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest

from tests.conftest import TINY_TRAIN, run_cli

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
    rows = postgres.sql(
        f"SELECT count(*), count(DISTINCT digest) FROM datasets WHERE experiment_id = {int(experiment_id)}", "mlflow"
    )
    assert rows.strip() == "3|3"


def _stdout_field(stdout: str, label: str) -> str:
    return re.search(rf"^{label}:\s+(\S+)", stdout, re.MULTILINE).group(1)


@pytest.mark.slow
def test_concurrent_registrations_of_one_name(pg_tracking_env, postgres, tiny_model, reviews_csv, tmp_path):
    """Two trainings register one name at once, then eight registrations of a new name start at
    the same instant: every one gets its own version number, none is lost, and the name ends
    with one `champion`, on the version with the better accuracy (both test on the same reviews)."""
    import mlflow
    from mlflow import MlflowClient

    from sentiment.tracking import MlflowTracker
    from sentiment.tracking.registry import register_version

    name = "raced"
    base = [
        sys.executable,
        "-m",
        "sentiment",
        "train",
        "--data",
        str(reviews_csv),
        "--model",
        tiny_model,
        *TINY_TRAIN,
        "--split-seed",
        "0",
        "--register-as",
        name,
        "--promote-if",
        "better",
    ]
    variants = [["--epochs", "3"], ["--epochs", "1", "--lr", "1e-7"]]  # one trained, one not
    procs = [
        subprocess.Popen(
            [*base, *v], env=pg_tracking_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for v in variants
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    client = MlflowClient()
    run_ids = [_stdout_field(out, "run id") for out, _ in outputs]
    versions = {v.version: v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == ["1", "2"]
    registered = {client.get_run(r).data.tags["sentiment.registered_version"]: r for r in run_ids}
    assert sorted(registered) == ["1", "2"]  # each training its own version
    assert all(versions[v].tags["run_id"] == r and versions[v].run_id == r for v, r in registered.items())
    assert all("promotion.decision" in v.tags for v in versions.values())  # each decided once
    scores = {v: float(versions[v].tags["test_accuracy"]) for v in versions}
    champion = client.get_model_version_by_alias(name, "champion").version
    assert scores[champion] == max(scores.values()) > min(scores.values()), (champion, scores)
    assert _alias_rows(postgres, name) == {"candidate": 1, "champion": 1}

    # eight registrations of one model under a new name at the same instant (the registered
    # model itself is created by whichever comes first): the server's version numbering races
    model_uri = _stdout_field(outputs[0][0], "logged model")
    experiment_id = client.get_run(run_ids[0]).info.experiment_id
    barrier = threading.Barrier(8)
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def register() -> None:
        try:
            run_id = client.create_run(experiment_id).info.run_id
            tracker = MlflowTracker(run_id, tmp_path / "journals" / run_id)
            barrier.wait()
            got[run_id] = register_version(tracker, model_uri, "hammered", 0.5)
            client.set_terminated(run_id)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert sorted(got.values(), key=int) == [str(i) for i in range(1, 9)]  # distinct, none lost, no gap
    versions = {v.version: v for v in mlflow.MlflowClient().search_model_versions("name = 'hammered'")}
    assert sorted(versions, key=int) == [str(i) for i in range(1, 9)]
    assert all(versions[v].tags["run_id"] == r for r, v in got.items())
    assert _alias_rows(postgres, "hammered") == {"candidate": 1}


def _alias_rows(postgres, name: str) -> dict[str, int]:
    """The store's own alias rows of a registered model (one per alias, or the alias is ambiguous)."""
    rows = postgres.sql(
        f"SELECT alias, count(*) FROM registered_model_aliases WHERE name = '{name}' GROUP BY alias", "mlflow"
    )
    return {alias: int(count) for alias, count in (line.split("|") for line in rows.split())}


@pytest.mark.slow
def test_ablation_children_in_parallel(pg_tracking_env, tiny_model, reviews_csv, tmp_path, postgres):
    """`sentiment ablate --max-parallel 2`: two children train side by side on the same data;
    both finish, each holds every metric once, and the parent summarises both."""
    import mlflow
    import yaml
    from mlflow import MlflowClient

    from tests.ablate.test_execution import children_of, parent_of, tiny_grid

    groups = [{"name": "depth", "variants": [{"name": "keep_layers_1", "options": {"keep_layers": 1}}]}]
    grid = tmp_path / "parallel.yaml"
    grid.write_text(yaml.safe_dump(tiny_grid("parallel", reviews_csv, tiny_model, [1], groups), sort_keys=False))
    result = run_cli(["ablate", "--grid", str(grid), "--max-parallel", "2"], pg_tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = pg_tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    assert parent.info.status == "FINISHED"
    assert (
        parent.data.metrics["ablation/children_finished"] == 2 and parent.data.metrics["ablation/children_failed"] == 0
    )
    children = children_of(parent.info.run_id, experiment)
    assert sorted(c.data.tags["sentiment.variant"] for c in children) == ["baseline", "keep_layers_1"]
    client = MlflowClient()
    steps_per_epoch = None
    for child in children:
        assert child.info.status == "FINISHED"
        for key in (k for k in child.data.metrics if not k.startswith("system/")):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{key} logged a step twice"
        assert len(client.get_metric_history(child.info.run_id, "test/accuracy")) == 1
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val/accuracy")] == [1, 2]
        train_steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert train_steps == list(range(5, train_steps[-1] + 1, 5))  # --log-every-steps 5, each once
        steps_per_epoch = steps_per_epoch or train_steps[-1]
        assert train_steps[-1] == steps_per_epoch  # both children trained the same steps
        assert sorted(d.dataset.name.rsplit("-", 1)[1] for d in child.inputs.dataset_inputs) == ["test", "train", "val"]
    # the two children logged the same three splits: the store keeps each dataset once
    experiment_id = int(parent.info.experiment_id)
    assert postgres.sql(f"SELECT count(*) FROM datasets WHERE experiment_id = {experiment_id}", "mlflow").strip() == "3"
    summary = mlflow.load_table("ablation/summary.json", run_ids=[parent.info.run_id])
    assert list(summary["variant"]) == ["baseline", "keep_layers_1"] and (summary["seeds"] == 1).all()
