"""Server mode, as an operator runs it: Airflow (api-server, scheduler, dag-processor, triggerer,
LocalExecutor) on a fresh PostgreSQL database, MLflow as a server on another, every task in its own
process, driven only through the REST API v2. Trigger with params, refuse a bad param, a 7-day
backfill, then a backfill of earlier dates once a later champion exists, then clear and rerun a date.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conftest import ROOT
from retrainer import registry
from retrainer.layout import RunLayout
from retrainer.results import FeaturesResult, RegistrationResult, TrainingResult
from retrainer.stack import Stack, ensure_secrets
from server_mode import Api, free_port, fresh_databases, require_postgres, wait_for

pytestmark = pytest.mark.e2e
DAG = "flight_delay_retrain"
MODEL = "flight_delay"
CONF = {"window_days": 7, "eval_days": 2, "epochs": 1, "batch_size": 512, "hidden_units": 8, "part_files": 1}
TRIGGERED = dt.date(2013, 2, 3)
LATER = [dt.date(2013, 2, 5) + dt.timedelta(days=i) for i in range(7)]  # 02-05 .. 02-11
# Not 2013-01-31: its last raw day (01-30, a real warm day) has neighbours on one side only in that run,
# and the raw gate's temperature-shift check rejects it (a known false alarm, see the README).
EARLIER = [dt.date(2013, 2, 1), dt.date(2013, 2, 2)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_postgres()
    from retrainer.landing import land

    base = tmp_path_factory.mktemp("server")
    land(base / "data", dt.date(2013, 1, 15), dt.date(2013, 2, 12))  # from EARLIER[0] - 7 window - 7 history days
    with fresh_databases("airflow", "mlflow") as dbs:
        stack = Stack(
            project=ROOT,
            airflow_home=base / "airflow",
            data_root=base / "data",
            airflow_db=dbs["airflow"],
            mlflow_backend=dbs["mlflow"],
            mlflow_artifacts=base / "mlflow-artifacts",
            secrets=ensure_secrets(base / ".env"),
            api_port=free_port(),
            mlflow_port=free_port(),
            tasks_use_mlflow_server=True,
            extra_env={
                "RETRAINER_SPARK_MASTER": "local[2]",
                "RETRAINER_SHUFFLE_PARTITIONS": "4",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__CORE__PARALLELISM": "3",
                "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
            },
        )
        stack.prepare()
        stack.airflow("dags", "reserialize")
        with stack.running(base / "logs"):
            api = Api(stack.api_url, stack.secrets["AIRFLOW_ADMIN_PASSWORD"])
            api.ok("PATCH", f"/dags/{DAG}", json={"is_paused": False})
            yield {"stack": stack, "api": api, "base": base}


def _layout(server, day: dt.date) -> RunLayout:
    return RunLayout.for_run(server["base"] / "data", MODEL, day)


def _failed_tasks(server, run_id: str) -> str:
    tis = server["api"].task_instances(DAG, run_id)
    return "\n".join(f"{t['task_id']}: {t['state']}" for t in tis)


def _wait_run(server, run_id: str, timeout: float = 600) -> dict:
    api = server["api"]

    def done():
        run = api.ok("GET", f"/dags/{DAG}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    run = wait_for(done, timeout, f"run {run_id}", lambda: _failed_tasks(server, run_id))
    assert run["state"] == "success", _failed_tasks(server, run_id)
    return run


def _champion_date(server) -> dt.date | None:
    from retrainer import promotion

    holder = promotion.holder(server["stack"].mlflow_url, MODEL, registry.CHAMPION)
    return holder.run_date if holder else None


def _backfill(server, days: list[dt.date]) -> list[dt.date | None]:
    """Run a backfill to completion; returns the champion's run date as seen every few seconds."""
    api = server["api"]
    body = {
        "dag_id": DAG, "from_date": f"{days[0]}T00:00:00Z", "to_date": f"{days[-1]}T00:00:00Z",
        "dag_run_conf": CONF, "max_active_runs": 2, "reprocess_behavior": "none",
    }  # fmt: skip
    backfill = api.ok("POST", "/backfills", json=body)
    seen: list[dt.date | None] = []

    def completed():
        seen.append(_champion_date(server))
        return api.ok("GET", f"/backfills/{backfill['id']}")["completed_at"]

    wait_for(completed, 1800, f"backfill {days[0]}..{days[-1]}", lambda: str(api.runs(DAG)))
    runs = {r["logical_date"][:10]: r for r in api.runs(DAG) if r["run_type"] == "backfill"}
    for day in days:
        assert runs[str(day)]["state"] == "success", _failed_tasks(server, runs[str(day)]["dag_run_id"])
    seen.append(_champion_date(server))
    return seen


def test_a_triggered_run_with_params_succeeds_and_a_bad_param_is_refused(server) -> None:
    api = server["api"]
    before = len(api.runs(DAG))
    bad = api.call("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": "2013-02-03T00:00:00Z",
                                                          "conf": {**CONF, "epochs": 0}})  # fmt: skip
    assert bad.status_code == 400 and "epochs" in bad.text
    assert len(api.runs(DAG)) == before  # refused before any run started

    conf = {**CONF, "epochs": 2}
    body = {"dag_run_id": "ui-like-trigger", "logical_date": f"{TRIGGERED}T00:00:00Z", "conf": conf}
    run = api.ok("POST", f"/dags/{DAG}/dagRuns", json=body)
    run = _wait_run(server, run["dag_run_id"])
    assert run["conf"] == conf
    training = _layout(server, TRIGGERED).load(TrainingResult)
    assert training.hyperparameters["epochs"] == 2
    reg = _layout(server, TRIGGERED).load(RegistrationResult)
    assert reg.tracking_uri == server["stack"].mlflow_url  # registered over HTTP, PostgreSQL behind it
    assert reg.promoted and _champion_date(server) == TRIGGERED


def test_backfills_in_any_order_never_move_the_champion_backwards(server) -> None:
    seen = [d for d in _backfill(server, LATER) if d is not None]
    assert seen == sorted(seen), seen  # the champion only moved forward while the backfill ran
    champion_after_later = registry.alias_version(server["stack"].mlflow_url, MODEL, registry.CHAMPION)

    seen = _backfill(server, EARLIER)  # a later champion exists now
    assert set(seen) == {seen[-1]} and seen[-1] >= LATER[0], seen
    assert registry.alias_version(server["stack"].mlflow_url, MODEL, registry.CHAMPION) == champion_after_later

    client = registry.configure(server["stack"].mlflow_url)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    by_date = {v.tags["run_date"]: v for v in versions}
    assert sorted(by_date) == sorted(str(d) for d in [TRIGGERED, *LATER, *EARLIER])  # one version per date
    assert len(versions) == len(by_date)
    for day in [*LATER, *EARLIER]:
        tags = by_date[str(day)].tags
        window = (day - dt.timedelta(days=7), day - dt.timedelta(days=2), day)
        assert tags["train_range"] == f"[{window[0]}, {window[1]})" and tags["eval_range"] == f"[{window[1]}, {day})"
        assert _layout(server, day).load(FeaturesResult).eval_range[1] == str(day)
    for day in EARLIER:
        reg = _layout(server, day).load(RegistrationResult)
        assert not reg.promoted and f"this run's date {day} is before champion" in reg.decision


def test_clearing_a_backfilled_date_replaces_its_outputs_without_a_second_version(server) -> None:
    api, day = server["api"], LATER[1]
    run = next(r for r in api.runs(DAG) if r["logical_date"][:10] == str(day))
    features = Path(_layout(server, day).features)
    stamp = features.stat().st_mtime_ns
    versions_before = len(registry.configure(server["stack"].mlflow_url).search_model_versions(f"name = '{MODEL}'"))

    body = {"dry_run": False, "dag_run_id": run["dag_run_id"], "only_failed": False, "reset_dag_runs": True}
    api.ok("POST", f"/dags/{DAG}/clearTaskInstances", json=body)
    _wait_run(server, run["dag_run_id"])

    assert features.stat().st_mtime_ns > stamp  # rebuilt and swapped in whole, not appended to
    reg = _layout(server, day).load(RegistrationResult)
    assert reg.reused_existing_version
    assert len(registry.configure(server["stack"].mlflow_url).search_model_versions(f"name = '{MODEL}'")) == (
        versions_before
    )
