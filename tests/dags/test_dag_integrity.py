"""DAG integrity: imports cleanly and cheaply, is configured to be retried, and picks the right day."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2
import pendulum
import pytest

from support import ROOT

DAG_IDS = {"flight_delay_retrain": "flight_delay", "arrival_delay_minutes_retrain": "arrival_delay_minutes"}
DOWNSTREAM = {"flight_delay_on_new_champion": "flight_delay"}  # scheduled on the champion Asset
HOUSEKEEPING = "retrainer_housekeeping"
HEAVY = ("tensorflow", "pyspark", "great_expectations", "mlflow", "keras", "pandas")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module", params=sorted(DAG_IDS))
def dag(request, dagbag):
    return dagbag.dags[request.param]


@pytest.fixture(scope="module")
def serialized(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["flight_delay_retrain"]))


def test_dag_files_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(DAG_IDS) | set(DOWNSTREAM) | {HOUSEKEEPING}
    # one DAG per workload, and every workload has its DAG
    from retrainer.workloads import workload_names

    assert sorted(DAG_IDS.values()) == workload_names()
    parsed = {Path(f).name for f in dagbag.file_last_changed}
    assert "retrain_dag_factory.py" not in parsed  # .airflowignore: shared code, not a DAG file


@pytest.mark.parametrize("dag_file", sorted(f"{d}.py" for d in [*DAG_IDS, *DOWNSTREAM, HOUSEKEEPING]))
def test_importing_a_dag_file_pulls_in_no_heavy_library(dag_file: str) -> None:
    code = (
        "import runpy, sys, json; sys.path[:0] = sys.argv[1:3]; runpy.run_path(sys.argv[3]); "
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "plugins"), str(ROOT / "dags"), str(ROOT / "dags" / dag_file)],
        capture_output=True,
        text=True,
        env=os.environ,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_schedule_tags_and_catchup(dag) -> None:
    workload = DAG_IDS[dag.dag_id]
    assert dag.tags >= {"retrainer", workload}
    assert dag.catchup is False
    assert dag.start_date == pendulum.datetime(2013, 1, 29, tz="UTC")
    assert dag.doc_md and f"runs/{workload}/date=D" in dag.doc_md
    assert 1 < dag.max_active_runs <= 4  # a run waiting for data does not block a UI trigger


def test_only_register_runs_in_the_one_slot_promotion_pool(dag) -> None:
    """max_active_runs does not cover backfills: the pool serialises champion moves across all runs."""
    from retrainer.registry.promotion import POOL

    assert {t.task_id for t in dag.tasks if t.pool == POOL} == {"register"}


def test_train_runs_through_the_training_operator_and_gpu_work_takes_the_gpu_pool(dag, monkeypatch) -> None:
    from retrainer.training.launchers import GPU_POOL
    from retrainer_plugins.training_operator import TensorFlowTrainOperator

    train = dag.get_task("train")
    assert train.task_type == "TensorFlowTrainOperator" and train.pool != GPU_POOL  # CPU by default
    monkeypatch.setenv("RETRAINER_TRAINING_QUEUE", "gpu-workers")
    gpu = TensorFlowTrainOperator(task_id="t", workload="flight_delay", validated={}, accelerator="gpu")
    assert (gpu.pool, gpu.queue) == (GPU_POOL, "gpu-workers")
    monkeypatch.setenv("RETRAINER_ACCELERATOR", "gpu")  # the deployment's setting, seen when the DAG is parsed
    from_env = TensorFlowTrainOperator(task_id="t", workload="flight_delay", validated={}, pool="my_gpus")
    assert (from_env.pool, from_env.queue) == ("my_gpus", "gpu-workers")  # the DAG author's pool wins


def test_on_kubernetes_train_is_the_providers_deferrable_job_operator(monkeypatch) -> None:
    """RETRAINER_LAUNCHER=kubernetes where the DAG file is parsed: the train task is the cncf.kubernetes provider's
    KubernetesJobOperator (deferrable, the pods' logs in the task log), between the same tasks as before."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator

    from retrainer.training.launchers import GPU_POOL

    monkeypatch.setenv("RETRAINER_LAUNCHER", "kubernetes")
    monkeypatch.setenv("RETRAINER_ACCELERATOR", "gpu")
    bag = DagBag(dag_folder=str(ROOT / "dags" / "flight_delay_retrain.py"))
    assert bag.import_errors == {}
    train = bag.dags["flight_delay_retrain"].get_task("train")
    assert isinstance(train, KubernetesJobOperator) and train.task_type == "TensorFlowKubernetesTrainOperator"
    assert train.deferrable and train.wait_until_job_complete and train.get_logs and train.pool == GPU_POOL
    assert train.upstream_task_ids == {"validate"} and {"evaluate", "export"} <= train.downstream_task_ids


def test_with_approval_required_a_person_answers_between_export_and_register(monkeypatch) -> None:
    """RETRAINER_REQUIRE_APPROVAL=yes where the DAG file is parsed: the standard provider's ApprovalOperator
    between export and register (Reject on time-out, never retried: a retry would ask again), and register
    takes its answer."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    monkeypatch.setenv("RETRAINER_REQUIRE_APPROVAL", "yes")
    monkeypatch.setenv("RETRAINER_APPROVAL_TIMEOUT_MINUTES", "90")
    bag = DagBag(dag_folder=str(ROOT / "dags" / "flight_delay_retrain.py"))
    assert bag.import_errors == {}
    dag = bag.dags["flight_delay_retrain"]
    approve = dag.get_task("approve_promotion")
    assert isinstance(approve, ApprovalOperator) and approve.defaults == ["Reject"] and approve.retries == 0
    assert approve.response_timeout == timedelta(minutes=90) and approve.options == ["Approve", "Reject"]
    assert approve.upstream_task_ids == {"export", "evaluate"} and approve.downstream_task_ids == {"register"}
    monkeypatch.setenv("RETRAINER_REQUIRE_APPROVAL", "no")
    plain = DagBag(dag_folder=str(ROOT / "dags" / "flight_delay_retrain.py")).dags["flight_delay_retrain"]
    assert "approve_promotion" not in plain.task_ids


def test_every_task_retries_with_backoff_and_has_a_timeout(dag) -> None:
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=2), task.task_id


def test_stages_run_in_order(dag) -> None:
    chain = [
        "wait_for_raw_partitions", "check_raw", "features", "validate", "train", "evaluate", "export", "register",
        "publish_champion",
    ]  # fmt: skip
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert set(dag.task_ids) == set(chain)
    assert dag.get_task("wait_for_raw_partitions").workload == DAG_IDS[dag.dag_id]


def test_tasks_carry_their_links_as_the_api_server_reads_them(dag, serialized) -> None:
    """Each task shows the links ``TASK_LINKS`` gives it, for its own workload; after serialization (what the API
    server holds) they are read from the XCom keys the task's process writes them under."""
    from retrainer.runners.task_links import TASK_LINKS

    for task_id, names in TASK_LINKS.items():
        links = dag.get_task(task_id).operator_extra_links
        assert [link.name for link in links] == list(names), task_id
        assert {link.workload for link in links} == {DAG_IDS[dag.dag_id]}, task_id
    assert not dag.get_task("features").operator_extra_links
    if dag.dag_id == "flight_delay_retrain":
        for task_id, names in TASK_LINKS.items():
            read = {link.name: link.xcom_key for link in serialized.get_task(task_id).operator_extra_links}
            written = {link.name: link.xcom_key for link in dag.get_task(task_id).operator_extra_links}
            assert read == written and len(set(written.values())) == len(names), task_id


def test_failures_and_champion_changes_are_alerted_and_only_a_new_champion_is_an_asset_event(dag) -> None:
    from retrainer_plugins.notifiers import RetrainerNotifier

    for task in dag.tasks:
        events = [n.event for n in task.on_failure_callback if isinstance(n, RetrainerNotifier)]
        assert events == ["task_failed"], task.task_id
    publish = dag.get_task("publish_champion")
    assert [n.event for n in publish.on_success_callback] == ["champion_changed"]
    assert [a.name for a in publish.outlets] == [f"{DAG_IDS[dag.dag_id]}_champion"]
    assert [t.task_id for t in dag.tasks if t.outlets] == ["publish_champion"]


def test_the_downstream_dag_is_scheduled_on_the_champion_asset(dagbag) -> None:
    for dag_id, workload in DOWNSTREAM.items():
        dag = dagbag.dags[dag_id]
        retrain = dagbag.dags[f"{workload}_retrain"]
        assert list(dag.timetable.asset_condition.objects) == retrain.get_task("publish_champion").outlets
        assert "downstream" in dag.tags and dag.doc_md
        for task in dag.tasks:
            assert task.retries >= 2 and task.execution_timeout is not None, task.task_id


def test_housekeeping_prunes_every_workload_daily_with_retries_and_alerts(dagbag) -> None:
    from retrainer.workloads import workload_names

    dag = dagbag.dags[HOUSEKEEPING]
    assert dag.schedule == "@daily" and not dag.catchup and dag.max_active_runs == 1
    assert sorted(dag.task_ids) == sorted(f"prune_{w}" for w in workload_names())
    for t in dag.tasks:
        assert t.retries >= 2 and t.retry_exponential_backoff and t.execution_timeout is not None
        assert t.on_failure_callback and not t.outlets


def test_alert_channels_are_chosen_by_configuration(monkeypatch) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from retrainer_plugins.notifiers import RetrainerNotifier, UnknownChannel, notifiers

    monkeypatch.delenv("RETRAINER_ALERT_CHANNELS", raising=False)
    assert [type(n) for n in notifiers("task_failed")] == [RetrainerNotifier]
    monkeypatch.setenv("RETRAINER_ALERT_CHANNELS", "smtp")
    with pytest.raises(UnknownChannel, match="RETRAINER_ALERT_EMAIL"):
        notifiers("task_failed")
    monkeypatch.setenv("RETRAINER_ALERT_EMAIL", "ml-oncall@example.com, owner@example.com")
    monkeypatch.setenv("RETRAINER_SMTP_CONN_ID", "smtp_alerts")
    base, smtp = notifiers("champion_changed")
    assert isinstance(base, RetrainerNotifier) and isinstance(smtp, SmtpNotifier)
    assert smtp.to == ["ml-oncall@example.com", "owner@example.com"] and smtp.smtp_conn_id == "smtp_alerts"
    assert "new champion" in smtp.subject
    # landed cell text reaches the e-mail escaped: an exception quoting a hostile value
    failed = notifiers("task_failed")[1]
    ti = types.SimpleNamespace(task_id="check_raw", try_number=1, log_url="http://airflow/log")
    html = jinja2.Environment().from_string(failed.html_content).render(ti=ti, exception='<a href="x">ZZ</a>')
    assert "&lt;a href=&#34;x&#34;&gt;ZZ&lt;/a&gt;" in html and "<a href" not in html
    monkeypatch.setenv("RETRAINER_ALERT_CHANNELS", "smtp,pager")
    with pytest.raises(UnknownChannel, match="'pager'"):
        notifiers("task_failed")


def test_sensor_reschedules_and_times_out(dag) -> None:
    sensor = dag.get_task("wait_for_raw_partitions")
    assert sensor.mode == "reschedule"
    assert 0 < sensor.timeout <= 24 * 3600


def test_the_form_the_cli_and_the_config_declare_the_same_parameters(dag) -> None:
    """Each parameter is declared once (config.py); the DAG form and the CLI are generated from it."""
    from retrainer.core import params
    from retrainer.core.config import RunConfig, Tuning, all_parameters
    from retrainer.runners.cli import build_parser

    tuning = params.parameters(Tuning)
    defaults = RunConfig.build("2013-06-01").tuning
    assert list(dag.params) == [p.name for p in tuning]
    for p in tuning:
        schema = dag.params.get_param(p.name).schema
        assert dag.params[p.name] == getattr(defaults, p.name) == p.default, p.name
        assert schema["type"] == {int: "integer", float: "number", str: "string"}[p.type], p.name
        assert schema.get("minimum") == p.spec.minimum and schema.get("maximum") == p.spec.maximum, p.name
        assert schema.get("pattern") == (p.spec.pattern and f"^({p.spec.pattern})$"), p.name
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    flags = {a.dest: a for a in run_parser._actions if a.option_strings}
    for p in all_parameters():
        assert p.name in flags, f"no CLI flag for {p.name}"
        assert flags[p.name].option_strings == [p.flag]
        assert tuple(flags[p.name].choices or ()) == (p.spec.choices or ()), p.name


def test_params_form_validates_input(dag) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    good = ParamsDict(dag.params)
    good.update({"epochs": 2, "min_gain": 0.01})
    assert good.validate()["epochs"] == 2
    for bad_value in (
        {"epochs": 0},
        {"learning_rate": 0},
        {"window_days": 1000},
        {"batch_size": "big"},
        {"members": "joint;deep"},
    ):
        bad = ParamsDict(dag.params)
        with pytest.raises(ParamValidationError):
            bad.update(bad_value)
            bad.validate()


@pytest.mark.parametrize("run_type", ["scheduled", "manual", "backfill"])
def test_run_date_is_the_logical_date_for_every_run_type(run_type: str, serialized) -> None:
    """With @daily as a trigger timetable the data interval is empty; the day comes from logical_date."""
    from airflow.models.backfill import _get_info_list
    from airflow.timetables.base import TimeRestriction

    from retrainer.runners.airflow_adapter import run_config

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
    context = {"logical_date": logical, "params": {"window_days": 14, "eval_days": 3}, "run_id": run_type}
    cfg = run_config(context, "flight_delay")
    assert cfg.run.date == expected and cfg.run.run_id == run_type
    w = cfg.window
    assert (w.train_start, w.eval_start) == (expected - dt.timedelta(days=14), expected - dt.timedelta(days=3))


def _sensor_of_march_11(tmp_path: Path, monkeypatch, missing: str) -> tuple[Any, dict]:
    """The sensor of a run dated 2013-03-11 (a 3-day window: raw days 03-01 .. 03-10 with the history) over a data
    root with those days landed but ``missing`` (a path under ``raw/``), and its context."""
    from retrainer.data.landing import land
    from retrainer_plugins.raw_partitions_sensor import RawPartitionsSensor

    land(tmp_path, dt.date(2013, 3, 1), dt.date(2013, 3, 10))
    (tmp_path / "raw" / missing).unlink()
    monkeypatch.setenv("RETRAINER_DATA_ROOT", str(tmp_path))
    sensor = RawPartitionsSensor(task_id="wait", workload="flight_delay", mode="poke", timeout=0, poke_interval=0)
    context = {
        "logical_date": pendulum.datetime(2013, 3, 11, tz="UTC"),
        "run_id": "scheduled__2013-03-11",
        "params": {"window_days": 3, "eval_days": 1, "validation_days": 1},
    }
    return sensor, context


def test_sensor_timeout_lists_the_missing_partitions(tmp_path: Path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from retrainer.data.landing import land

    sensor, context = _sensor_of_march_11(tmp_path, monkeypatch, "weather/date=2013-03-05/weather.csv")
    with pytest.raises(AirflowSensorTimeout) as err:
        sensor.execute(context)
    # window [03-08, 03-11) plus 7 days of history: 03-01 .. 03-10 needed, 03-05 weather missing
    assert "weather: 2013-03-05" in str(err.value)
    assert "flights" not in str(err.value)
    land(tmp_path, dt.date(2013, 3, 5), dt.date(2013, 3, 5))
    assert sensor.poke(context) is True
    # A day whose file is there but whose commit marker is not (still being written, or landed early and
    # partial) is not landed: the sensor waits, naming it.
    (tmp_path / "raw" / "flights" / "date=2013-03-09" / "_SUCCESS").unlink()
    assert sensor.poke(context) is False
    with pytest.raises(AirflowSensorTimeout, match=r"flights: 2013-03-09 \(file there, no _SUCCESS yet\)"):
        sensor.execute(context)


def test_past_the_data_deadline_the_sensor_alerts_once_and_keeps_waiting(tmp_path: Path, monkeypatch) -> None:
    """A run dated 2013-03-11 with a day missing, polled long after its 6-hour deadline: one ``data_late`` alert
    naming the missing day, however many pokes (reschedule mode pokes for hours); the poke still answers False."""
    from retrainer.data.landing import land
    from retrainer.runners.alerts import recorded

    sensor, context = _sensor_of_march_11(tmp_path, monkeypatch, "flights/date=2013-03-10/_SUCCESS")
    assert sensor.poke(context) is False and sensor.poke(context) is False
    alerts = recorded(tmp_path, "data_late")
    assert len(alerts) == 1, alerts
    assert alerts[0]["run_date"] == "2013-03-11" and alerts[0]["run_id"] == "scheduled__2013-03-11"
    assert "deadline 2013-03-11 06:00 UTC" in alerts[0]["message"]
    assert "flights: 2013-03-10 (file there, no _SUCCESS yet)" in alerts[0]["message"]
    land(tmp_path, dt.date(2013, 3, 10), dt.date(2013, 3, 10))
    assert sensor.poke(context) is True and len(recorded(tmp_path, "data_late")) == 1


def test_a_champion_older_than_the_deployment_allows_is_alerted_after_a_run(tmp_path: Path, monkeypatch) -> None:
    """The register task's freshness check against a real (SQLite) registry: a champion trained 20 days before
    the run is stale under the default 14 days, once per try; under 30 it is not; no champion, no alert."""
    from retrainer import registry
    from retrainer.runners.alerts import recorded
    from retrainer_plugins.notifiers import champion_freshness

    monkeypatch.setenv("RETRAINER_DATA_ROOT", str(tmp_path))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = registry.configure(tracking)
    client.create_registered_model("m")
    context = {"logical_date": pendulum.datetime(2013, 6, 8, tz="UTC"), "run_id": "r1", "params": {}}
    run_date = dt.date(2013, 6, 8)
    assert champion_freshness(context, "m", run_date, tracking) is None  # no champion yet
    version = client.create_model_version("m", source=str(tmp_path), tags={"run_date": "2013-05-19"}).version
    client.set_registered_model_alias("m", "champion", version)
    message = champion_freshness(context, "m", run_date, tracking)
    assert message and f"m's champion v{version} was trained for 2013-05-19, 20 days before this run" in message
    assert champion_freshness(context, "m", run_date, tracking) == message
    assert [a["message"] for a in recorded(tmp_path, "champion_stale")] == [message]  # once per try
    monkeypatch.setenv("RETRAINER_CHAMPION_MAX_AGE_DAYS", "30")
    assert champion_freshness({**context, "run_id": "r2"}, "m", run_date, tracking) is None


def test_an_unknown_conf_key_is_refused_not_ignored() -> None:
    """Airflow merges every conf key into params; a renamed or misspelt one must not fall back to a default."""
    from retrainer.core.config import ConfigError
    from retrainer.runners.airflow_adapter import run_config

    context = {"logical_date": pendulum.datetime(2013, 6, 8, tz="UTC"), "params": {"min_auc_gain": 0.01}}
    with pytest.raises(ConfigError, match=r"unknown run parameter\(s\) \['min_auc_gain'\]"):
        run_config(context, "flight_delay")
    with pytest.raises(ConfigError, match="workload"):
        run_config({**context, "params": {"workload": "other"}}, "flight_delay")  # identity is not a form field


def test_the_sensor_fails_at_once_on_a_bad_conf_instead_of_waiting() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from retrainer_plugins.raw_partitions_sensor import RawPartitionsSensor

    sensor = RawPartitionsSensor(task_id="wait", workload="flight_delay", mode="poke", timeout=0, poke_interval=0)
    context = {"logical_date": pendulum.datetime(2013, 6, 8, tz="UTC"), "params": {"epochs": 0}}
    with pytest.raises(AirflowFailException, match="ConfigError: invalid run configuration: epochs must be >= 1"):
        sensor.poke(context)
