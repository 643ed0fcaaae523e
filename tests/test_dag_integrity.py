"""DAG integrity: imports cleanly and cheaply, is configured to be retried, and picks the right day."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pendulum
import pytest

from conftest import ROOT

DAG_ID = "flight_delay_retrain"
HEAVY = ("tensorflow", "pyspark", "great_expectations", "mlflow", "keras", "pandas")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


@pytest.fixture(scope="module")
def serialized(dag):
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def test_dag_files_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dag_ids


def test_importing_the_dag_file_pulls_in_no_heavy_library() -> None:
    code = (
        "import runpy, sys, json; sys.path[:0] = [sys.argv[1]]; runpy.run_path(sys.argv[2]); "
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "plugins"), str(ROOT / "dags" / f"{DAG_ID}.py")],
        capture_output=True,
        text=True,
        env=os.environ,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_schedule_tags_and_catchup(dag) -> None:
    assert dag.tags >= {"retrainer", "flight_delay"}
    assert dag.catchup is False
    assert dag.start_date == pendulum.datetime(2013, 1, 29, tz="UTC")
    assert dag.doc_md and "runs/flight_delay/date=D" in dag.doc_md
    assert dag.max_active_runs == 1  # champion updates are serialised


def test_every_task_retries_with_backoff_and_has_a_timeout(dag) -> None:
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=2), task.task_id


def test_stages_run_in_order(dag) -> None:
    chain = ["wait_for_raw_partitions", "features", "validate", "train", "evaluate", "export", "register"]
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert set(dag.task_ids) == set(chain)


def test_sensor_reschedules_and_times_out(dag) -> None:
    sensor = dag.get_task("wait_for_raw_partitions")
    assert sensor.mode == "reschedule"
    assert 0 < sensor.timeout <= 24 * 3600


def test_params_form_validates_input(dag) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    assert set(dag.params) == {"window_days", "eval_days", "epochs", "batch_size", "learning_rate", "min_auc_gain"}
    good = ParamsDict(dag.params)
    good.update({"epochs": 2, "min_auc_gain": 0.01})
    assert good.validate()["epochs"] == 2
    bad = ParamsDict(dag.params)
    with pytest.raises(ParamValidationError):
        bad.update({"epochs": 0})
        bad.validate()


@pytest.mark.parametrize("run_type", ["scheduled", "manual", "backfill"])
def test_run_date_is_the_logical_date_for_every_run_type(run_type: str, serialized) -> None:
    """With @daily as a trigger timetable the data interval is empty; the day comes from logical_date."""
    from airflow.models.backfill import _get_info_list
    from airflow.timetables.base import TimeRestriction

    from retrainer.airflow_adapter import run_config

    if run_type == "scheduled":
        info = serialized.timetable.next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(earliest=serialized.start_date, latest=None, catchup=True),
        )
        logical, expected = info.logical_date, dt.date(2013, 1, 29)
    elif run_type == "manual":
        logical, expected = pendulum.datetime(2013, 6, 8, tz="UTC"), dt.date(2013, 6, 8)
        interval = serialized.timetable.infer_manual_data_interval(run_after=logical)
        assert interval.start == interval.end == logical
    else:
        infos = _get_info_list(
            from_date=pendulum.datetime(2013, 3, 1, tz="UTC"),
            to_date=pendulum.datetime(2013, 3, 3, tz="UTC"),
            reverse=False,
            dag=serialized,
        )
        assert [i.logical_date.date() for i in infos] == [dt.date(2013, 3, d) for d in (1, 2, 3)]
        logical, expected = infos[1].logical_date, dt.date(2013, 3, 2)
    cfg = run_config({"logical_date": logical, "params": {"window_days": 14, "eval_days": 3}, "run_id": run_type})
    assert cfg.run_date == expected
    assert (cfg.train_start, cfg.eval_start) == (expected - dt.timedelta(days=14), expected - dt.timedelta(days=3))


def test_sensor_timeout_lists_the_missing_partitions(tmp_path: Path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from retrainer.landing import land
    from retrainer_plugins.raw_partitions_sensor import RawPartitionsSensor

    land(tmp_path, dt.date(2013, 3, 1), dt.date(2013, 3, 9))
    (tmp_path / "raw" / "weather" / "date=2013-03-05" / "weather.csv").unlink()
    monkeypatch.setenv("RETRAINER_DATA_ROOT", str(tmp_path))
    sensor = RawPartitionsSensor(task_id="wait", mode="poke", timeout=0, poke_interval=0)
    context = {"logical_date": pendulum.datetime(2013, 3, 10, tz="UTC"), "params": {"window_days": 2, "eval_days": 1}}
    with pytest.raises(AirflowSensorTimeout) as err:
        sensor.execute(context)
    # window [03-08, 03-10) plus 7 days of history: 03-01 .. 03-09 needed, 03-05 weather missing
    assert "weather: 2013-03-05" in str(err.value)
    assert "flights" not in str(err.value)
    land(tmp_path, dt.date(2013, 3, 5), dt.date(2013, 3, 5))
    assert sensor.poke(context) is True
