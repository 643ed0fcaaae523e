"""Server mode, as an operator runs it: Airflow (api-server, scheduler, dag-processor, triggerer) with
the CeleryExecutor on Redis, a worker for the default queue and one that listens only on the training
queue, on a fresh PostgreSQL database; MLflow as a server on another. Driven through the REST API v2
and, for the trigger form, a real browser: trigger with params from the form, refuse a bad param, a
new champion triggers the downstream DAG, a 7-day backfill, then a backfill of earlier dates once a
later champion exists, then clear and rerun a date.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pytest

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.layout import RunLayout, date_folder
from retrainer.core.processes import free_ports
from retrainer.core.results import EvaluationResult, ExportResult, FeaturesResult, RegistrationResult, TrainingResult
from retrainer.devtools.local_stack import MLFLOW_USER, TRAINING_QUEUE, WITHHELD_FROM_WORKERS, WORKERS, Stack
from retrainer.devtools.secrets_file import ensure_secrets
from retrainer.stages.register import RUN_FOLDER_TAG
from support import ROOT, SPARK_CONNECT_URL
from support.server_mode import (
    REDIS_URL,
    Api,
    require_postgres,
    require_redis,
    team_databases,
    trigger_from_the_ui,
    wait_for,
    write_timeline,
)

DAG = "flight_delay_retrain"
DOWNSTREAM = "flight_delay_on_new_champion"
ARTIFACTS = Path(os.environ.get("RETRAINER_TEST_ARTIFACTS") or ROOT / "test-artifacts")
MODEL = "flight_delay"
# min_gain -1 (the deployment's floor allows it, see extra_env): every run that is not older than the champion
# is promoted, so the backfills exercise the date rule itself
# (a 1-epoch model on two days is too noisy to beat the champion on AUC when it should).
CONF = {"window_days": 7, "eval_days": 2, "epochs": 1, "batch_size": 512, "hidden_units": 8, "part_files": 1,
        "members": "joint", "min_gain": -1.0}  # fmt: skip
TRIGGERED = dt.date(2013, 2, 3)
LATER = [dt.date(2013, 2, 5) + dt.timedelta(days=i) for i in range(3)]  # 02-05 .. 02-07: max_active_runs at once
# Not 2013-01-31: its last raw day (01-30, a real warm day) has neighbours on one side only in that run,
# and the raw gate's temperature-shift check rejects it (a known false alarm, see the README).
EARLIER = [dt.date(2013, 2, 1), dt.date(2013, 2, 2)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_postgres()
    require_redis()
    import redis

    from retrainer.data.landing import land

    # This run's Celery keys carry their own prefix: a worker left over from an interrupted run (or another
    # run sharing the Redis) cannot take this run's tasks, and this run deletes only its own keys.
    prefix = f"retrainer-test-{uuid.uuid4().hex[:8]}:"
    base = tmp_path_factory.mktemp("server")
    land(base / "data", dt.date(2013, 1, 15), dt.date(2013, 2, 12))  # from EARLIER[0] - 7 window - 7 history days
    api_port, mlflow_port = free_ports(2)
    with team_databases() as dbs:
        stack = Stack(
            project=ROOT,
            airflow_home=base / "airflow",
            data_root=base / "data",
            airflow_db=dbs.urls["airflow"],
            mlflow_backend=dbs.urls["mlflow"],
            mlflow_auth_db=dbs.urls["mlflow_auth"],
            mlflow_artifacts=base / "mlflow-artifacts",
            secrets=ensure_secrets(base / ".env"),
            api_port=api_port,
            mlflow_port=mlflow_port,
            executor="CeleryExecutor",
            celery_broker=REDIS_URL,
            training_concurrency=2,  # two backfill runs may train at once (compose's GPU worker takes one)
            tasks_use_mlflow_server=True,
            mlflow_auth=True,  # every MLflow request authenticated; tasks log as a non-admin user
            extra_env={
                "RETRAINER_TRAINING_QUEUE": TRAINING_QUEUE,  # as docker-compose.yaml sets it
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": prefix,
                "RETRAINER_SPARK_MASTER": SPARK_CONNECT_URL,  # every task of every worker: the tests' warm server
                "RETRAINER_SHUFFLE_PARTITIONS": "4",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__CORE__PARALLELISM": "3",
                "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
                "RETRAINER_MIN_GAIN_FLOOR": "-1",  # this deployment lets a run's min_gain go down to -1 (CONF)
                "RETRAINER_MIN_EVAL_DAYS": "2",  # a run with one evaluation day is held (the REST twin's)
            },
        )
        stack.prepare()
        stack.airflow("dags", "reserialize")
        try:
            with stack.running(base / "logs", training_worker=True), pytest.MonkeyPatch.context() as mp:
                for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # this test reads as the tasks do
                    mp.setenv(key, stack.settings()[key])
                api = Api(stack.api_url, stack.secrets["AIRFLOW_ADMIN_PASSWORD"])
                for dag_id in (DAG, DOWNSTREAM):
                    api.ok("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                yield {"stack": stack, "api": api, "base": base, "logs": base / "logs", "dbs": dbs}
                write_timeline(api, DAG, ARTIFACTS / "server-mode-tasks.tsv")
        finally:
            broker = redis.Redis.from_url(REDIS_URL)
            keys = list(broker.scan_iter(match=f"{prefix}*"))
            if keys:
                broker.delete(*keys)


def _layout(server, day: dt.date) -> RunLayout:
    return RunLayout.latest(server["base"] / "data", MODEL, day)  # each DAG run has a folder of its own


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
    from retrainer.registry import promotion

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


FORM = {
    "Window days": 7,
    "Evaluation days": 2,
    "Epochs": 2,
    "Batch size": 512,
    "Hidden units": 8,
    "Part files": 1,
}


def test_a_run_triggered_from_the_ui_form_runs_with_its_params_and_trains_on_the_training_queue(server) -> None:
    api = server["api"]

    def manual_runs() -> list[str]:
        # Only manual runs: unpausing makes today's scheduled run whenever the scheduler gets to it (it waits
        # for data that never lands), so the full list can grow while this test looks at it.
        return [r["dag_run_id"] for r in api.runs(DAG) if r["run_type"] == "manual"]

    assert manual_runs() == []
    bad = api.call("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": "2013-02-03T00:00:00Z",
                                                          "conf": {**CONF, "epochs": 0}})  # fmt: skip
    assert bad.status_code == 400 and "epochs" in bad.text
    assert manual_runs() == []  # refused before any run started

    # A second run of the same date, triggered through the REST API at the same moment, as a second trigger later
    # that day would be (Airflow keeps one run per logical date; the run date is the logical date's day), with
    # other data-defining params (one evaluation day: below the deployment's RETRAINER_MIN_EVAL_DAYS, so it is
    # held, never champion).
    twin_id = "same-date-by-rest"
    twin_conf = {**CONF, "eval_days": 1, "validation_days": 1}
    api.ok("POST", f"/dags/{DAG}/dagRuns", json={"dag_run_id": twin_id, "logical_date": f"{TRIGGERED}T14:37:00Z",
                                                 "conf": twin_conf})  # fmt: skip

    run_id = "from-the-trigger-form"
    url = trigger_from_the_ui(
        server["stack"].api_url, server["stack"].secrets["AIRFLOW_ADMIN_PASSWORD"], DAG,
        logical_date=TRIGGERED, run_id=run_id, fields=FORM, screenshot=ARTIFACTS / "trigger-form.png",
    )  # fmt: skip
    assert url.endswith(f"/dags/{DAG}/runs/{run_id}"), url
    run = _wait_run(server, run_id)
    form = {**CONF, "epochs": 2, "min_gain": 0.0, "members": "all"}  # the form's defaults for what it did not fill
    assert run["conf"] == form | {k: v for k, v in run["conf"].items() if k not in form}
    assert run["logical_date"].startswith(str(TRIGGERED)) and run["run_type"] == "manual"
    training = _run_layout(server, TRIGGERED, run_id).load(TrainingResult)
    assert training.hyperparameters["epochs"] == 2 and training.hyperparameters["hidden_units"] == 8
    reg = _run_layout(server, TRIGGERED, run_id).load(RegistrationResult)
    assert reg.tracking_uri == server["stack"].mlflow_url  # registered over HTTP, PostgreSQL behind it
    assert reg.promoted and _champion_date(server) == TRIGGERED

    # Two runs of one date at once, in two folders: each registered exactly the SavedModel it evaluated.
    _wait_run(server, twin_id)
    _each_registered_what_it_evaluated(server, TRIGGERED, {run_id: 2, twin_id: 1})
    twin = _run_layout(server, TRIGGERED, twin_id).load(RegistrationResult)
    assert not twin.promoted and "promotes only on at least 2 (RETRAINER_MIN_EVAL_DAYS)" in twin.decision

    # Celery: train went to the training queue, and only the worker listening there ran it.
    queues = {t["task_id"]: t["queue"] for t in api.task_instances(DAG, run_id)}
    assert queues["train"] == TRAINING_QUEUE and queues["features"] == "default"
    training_log = (server["logs"] / "training-worker.log").read_text()
    default_log = (server["logs"] / "celery-worker.log").read_text()
    assert "task_id='train'" in training_log and "task_id='features'" not in training_log
    assert "task_id='features'" in default_log and "task_id='train'" not in default_log
    # Each worker imported the tasks' libraries once, before forking its pool (retrainer_plugins.celery_config).
    for log in (training_log, default_log):
        preloaded = [line for line in log.splitlines() if "retrainer preload:" in line]
        assert len(preloaded) == 1 and "'tensorflow'" in preloaded[0] and "'great_expectations'" in preloaded[0]


def _run_layout(server, day: dt.date, run_id: str) -> RunLayout:
    """The folder of one DAG run of ``day`` (run=<run id>-<digest of the run id and data-defining params>)."""
    (folder,) = date_folder(server["base"] / "data", MODEL, day).glob(f"run={run_id}-*")
    return RunLayout(folder)


def _each_registered_what_it_evaluated(server, day: dt.date, eval_days: dict[str, int]) -> None:
    from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG, download_saved_model

    mlflow_url, versions = server["stack"].mlflow_url, set()
    for run_id, days in eval_days.items():
        layout = _run_layout(server, day, run_id)
        evaluation, exported = layout.load(EvaluationResult), layout.load(ExportResult)
        reg = layout.load(RegistrationResult)
        assert evaluation.eval_range == (str(day - dt.timedelta(days=days)), str(day))
        tags = registry.version_tags(mlflow_url, MODEL, reg.version)
        assert tags[RUN_FOLDER_TAG] == layout.root.relative_to(server["base"] / "data").as_posix()
        assert tags[SAVED_MODEL_DIGEST_TAG] == exported.saved_model_digest
        # downloaded over HTTP, the version's files have that digest (download_saved_model checks it)
        download_saved_model(mlflow_url, MODEL, reg.version, server["base"] / f"download-{run_id}")
        versions.add(reg.version)
    assert len(versions) == len(eval_days)


def test_mlflow_answers_only_authenticated_requests_and_workers_hold_no_admin_or_signing_secret(server) -> None:
    import requests

    stack = server["stack"]
    search = f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/search"
    assert requests.get(search, timeout=30).status_code == 401  # no credentials
    assert requests.get(search, auth=("retrainer", "wrong"), timeout=30).status_code == 401
    mine = requests.get(search, auth=(MLFLOW_USER, stack.secrets["MLFLOW_PASSWORD"]), timeout=30)
    assert mine.status_code == 200 and [m["name"] for m in mine.json()["registered_models"]] == [MODEL]
    # What every Airflow component and Celery worker was started with (their /proc environ is overwritten by
    # setproctitle): the tasks' user, never MLflow's admin password, which only MLflow's auth file holds.
    env = stack.env()
    assert env["MLFLOW_TRACKING_USERNAME"] == MLFLOW_USER
    assert stack.secrets["MLFLOW_ADMIN_PASSWORD"] not in "".join(env.values())
    assert stack.secrets["MLFLOW_ADMIN_PASSWORD"] in stack.mlflow_auth_file.read_text()
    assert stack.mlflow_auth_file.stat().st_mode & 0o777 == 0o600
    # The Celery workers ran every task of this module's runs without Airflow's token-signing secret and
    # Fernet key (the other components have them).
    for worker in WORKERS:
        started = "".join(stack.started_env[worker].values())
        assert stack.secrets["AIRFLOW_JWT_SECRET"] not in started and stack.secrets["AIRFLOW_FERNET_KEY"] not in started
        assert not set(WITHHELD_FROM_WORKERS) & set(stack.started_env[worker])
    assert stack.started_env["scheduler"]["AIRFLOW__API_AUTH__JWT_SECRET"] == stack.secrets["AIRFLOW_JWT_SECRET"]
    # MLflow logs in to PostgreSQL as a role of its own (docker/postgres-roles.sql, as compose): its login is in
    # MLflow's environment only, not on its command line, and no Airflow component or worker holds it (the
    # roles themselves reach no other database: test_compose.py).
    dbs = server["dbs"]
    mlflow_login = dbs.urls["mlflow"].split("://", 1)[1].split("@", 1)[0]
    assert stack.started_env["mlflow"]["MLFLOW_BACKEND_STORE_URI"] == dbs.urls["mlflow"]
    assert mlflow_login not in " ".join(stack.mlflow_command())
    for name, started in stack.started_env.items():
        if name != "mlflow":
            assert mlflow_login not in "".join(started.values()), name
            assert dbs.roles["airflow"] + ":" in started["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name


def test_a_new_champion_is_announced_and_triggers_the_downstream_dag(server) -> None:
    from retrainer.registry.champion_log import CURRENT, champion_log_folder
    from retrainer.runners import alerts

    api = server["api"]
    version = registry.alias_version(server["stack"].mlflow_url, MODEL, registry.CHAMPION)

    def downstream_done():
        runs = [r for r in api.runs(DOWNSTREAM) if r["state"] in ("success", "failed")]
        return runs or None

    (run,) = wait_for(downstream_done, 180, f"a run of {DOWNSTREAM}", lambda: str(api.runs(DOWNSTREAM)))
    assert run["run_type"] == "asset_triggered" and run["state"] == "success", _failed_tasks(server, run["dag_run_id"])
    events = api.ok("GET", "/assets/events", params={"source_dag_id": DAG})["asset_events"]
    assert [e["extra"]["version"] for e in events] == [version]
    assert (
        events[0]["source_task_id"] == "publish_champion" and events[0]["uri"] == f"x-mlflow-model://{MODEL}/champion"
    )
    kept = atomic.read_json(champion_log_folder(server["base"] / "data", MODEL) / f"v{version}.json")
    assert kept["model_uri"] == f"models:/{MODEL}/{version}" and kept["run_date"] == str(TRIGGERED)
    assert 0.5 < kept["metrics"]["auc"] <= 1 and kept["previous_version"] is None
    # it acted on that version after checking it is the champion in the registry
    acted = atomic.read_json(champion_log_folder(server["base"] / "data", MODEL) / CURRENT)
    assert acted["version"] == version
    (changed,) = alerts.recorded(server["base"] / "data", alerts.CHAMPION_CHANGED)
    assert changed["details"]["version"] == version


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
    assert sorted(by_date) == sorted(str(d) for d in [TRIGGERED, *LATER, *EARLIER])  # one version per run:
    assert len(versions) == len(by_date) + 1  # one per date, and TRIGGERED's REST twin
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

    # from features on (as an operator would after fixing features code); the raw gate's result stays
    body = {"dry_run": False, "dag_run_id": run["dag_run_id"], "only_failed": False, "reset_dag_runs": True,
            "task_ids": ["features"], "include_downstream": True}  # fmt: skip
    api.ok("POST", f"/dags/{DAG}/clearTaskInstances", json=body)
    _wait_run(server, run["dag_run_id"])

    assert features.stat().st_mtime_ns > stamp  # rebuilt and swapped in whole, not appended to
    reg = _layout(server, day).load(RegistrationResult)
    assert reg.reused_existing_version
    assert len(registry.configure(server["stack"].mlflow_url).search_model_versions(f"name = '{MODEL}'")) == (
        versions_before
    )
