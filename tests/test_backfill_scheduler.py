"""A real backfill: `airflow standalone` (scheduler, LocalExecutor, API server) runs two past dates.

Each task runs in its own process as in production, so this also proves the tasks need nothing from
the test process. Checks that every backfill run trains for its own logical date with the backfill's
conf, and that both runs register a version.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from retrainer import registry
from retrainer.layout import RunLayout
from retrainer.results import FeaturesResult, TrainingResult

pytestmark = pytest.mark.e2e
DATES = ("2013-02-04", "2013-02-05")
CONF = {"window_days": 7, "eval_days": 2, "epochs": 1, "batch_size": 256}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}; last lines of {log}:\n{log.read_text()[-3000:]}")


def _api_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def _backfill_states(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        rows = con.execute("select logical_date, state from dag_run where run_type = 'backfill'").fetchall()
    return {str(d)[:10]: s for d, s in rows}


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory, landed: Path) -> dict:
    base = tmp_path_factory.mktemp("backfill")
    (base / "data").mkdir()
    (base / "data" / "raw").symlink_to(landed / "raw")
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",  # standalone starts its components as `airflow ...`
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "RETRAINER_DATA_ROOT": str(base / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
    }

    def airflow(*args: str, attempts: int = 1) -> None:
        """Run an Airflow CLI command; with the scheduler and dag-processor writing to the same SQLite
        file a command can meet a transient lock, so commands issued while they run get a few attempts."""
        for attempt in range(1, attempts + 1):
            proc = subprocess.run([f"{bin_dir}/airflow", *args], env=env, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                return
            if attempt < attempts:
                time.sleep(5)
        raise AssertionError(
            f"airflow {' '.join(args)} failed (exit {proc.returncode}) after {attempts} attempt(s):\n"
            f"{proc.stderr[-3000:]}\n{proc.stdout[-1500:]}"
        )

    airflow("db", "migrate")
    log = base / "standalone.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([f"{bin_dir}/airflow", "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=ROOT)  # fmt: skip
    try:
        _wait_for(lambda: _api_up(port), 180, "the API server", log)
        airflow("dags", "reserialize", attempts=3)
        airflow("dags", "unpause", "flight_delay_retrain", attempts=3)  # backfill runs of a paused DAG stay queued
        airflow("backfill", "create", "--dag-id", "flight_delay_retrain", "--from-date", DATES[0], "--to-date",
                DATES[1], "--dag-run-conf", json.dumps(CONF), "--max-active-runs", "1", attempts=3)  # fmt: skip
        db = base / "airflow" / "airflow.db"

        def finished() -> bool:
            states = _backfill_states(db)
            return len(states) == 2 and all(s in ("success", "failed") for s in states.values())

        _wait_for(finished, 900, "both backfill runs", log)
        return {"states": _backfill_states(db), "base": base, "tracking": env["MLFLOW_TRACKING_URI"]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_backfill_runs_each_date_with_its_own_window_and_the_backfill_conf(backfilled: dict) -> None:
    assert backfilled["states"] == dict.fromkeys(DATES, "success")
    for day in DATES:
        layout = RunLayout.for_run(backfilled["base"] / "data", "flight_delay", dt.date.fromisoformat(day))
        features, training = layout.load(FeaturesResult), layout.load(TrainingResult)
        assert features.eval_range[1] == day  # D is the run's logical date, not its (empty) data interval
        assert training.hyperparameters["window_days"] == CONF["window_days"]
        assert training.hyperparameters["epochs"] == CONF["epochs"]
    client = registry.configure(backfilled["tracking"])
    versions = client.search_model_versions("name = 'flight_delay'")
    assert sorted(v.tags["run_date"] for v in versions) == list(DATES)
