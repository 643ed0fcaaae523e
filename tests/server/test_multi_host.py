"""The team stack as docker-compose.yaml describes it, one host per service: every service of the file (with the
``gpu`` profile) runs natively on a network namespace of its own, under its own host name and address, with the
entrypoint, command, environment, volumes, dependencies and health checks the file gives it
(:mod:`support.compose_native`); the test process reaches them over a bridge, as a person at the published ports
would. Nothing reaches another host over loopback: each host's loopback is its own.

A run triggered from the REST API and a 3-day backfill of earlier dates: each task ran on the host of the worker
serving its queue (training on the GPU worker's, as the profile routes it), the Spark work ran on the Spark worker
host's executor behind the Spark Connect server, the model went to MLflow over HTTP (its files are on the MLflow
host's volume), and the champion moved once: the backfilled dates are older than the champion.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
import requests
import yaml

from retrainer.devtools.secrets_file import ensure_secrets
from support import ROOT
from support.compose_native import NativeCompose, unserved_training_queue
from support.netns import Network, available
from support.server_mode import Api, wait_for

DAG = "flight_delay_retrain"
MODEL = "flight_delay"
CONF = {"window_days": 7, "eval_days": 2, "epochs": 1, "batch_size": 512, "hidden_units": 8, "part_files": 1,
        "members": "joint"}  # fmt: skip
TRIGGERED = dt.date(2013, 2, 6)
BACKFILL = [dt.date(2013, 2, 2), dt.date(2013, 2, 3), dt.date(2013, 2, 4)]
ARTIFACTS = Path(os.environ.get("RETRAINER_TEST_ARTIFACTS") or ROOT / "test-artifacts")


def _compose(env_file: Path, *args: str) -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            raise AssertionError("docker-compose is not installed: `make test-tools` installs it")
        pytest.skip("docker-compose not installed (make test-tools)")
    argv = [binary, "-f", str(ROOT / "docker-compose.yaml"), "--project-directory", str(ROOT),
            "--env-file", str(env_file), "--profile", "gpu", *args]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTGRES", "RETRAINER", "MLFLOW"))}
    done = subprocess.run(argv, capture_output=True, text=True, env=clean, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def team():
    why = available()
    if why:
        if os.environ.get("CI"):
            raise AssertionError(f"CI is set but the multi-host test cannot make hosts here: {why}")
        pytest.skip(why)
    from retrainer.data.landing import land

    # not under pytest's tmp folder (mode 0700): PostgreSQL runs as its own user and keeps its data here
    base = Path(tempfile.mkdtemp(prefix="retrainer-hosts-"))
    base.chmod(0o755)
    try:
        land(base / "data", dt.date(2013, 1, 18), dt.date(2013, 2, 6))
        env_file = base / ".env"
        secrets = ensure_secrets(env_file)
        names = _compose(env_file, "config", "--services").split()
        with Network.create(names) as net:
            api_host = net.hosts["airflow-apiserver"]
            with env_file.open("a") as f:  # the deployment's choices, as an operator writes them in .env
                f.write(f"RETRAINER_DATA_DIR={base / 'data'}\nRETRAINER_TRAINING_QUEUE=training\n")
                f.write(f"AIRFLOW_BASE_URL=http://{api_host.address}:8080\n")
            config = yaml.safe_load(_compose(env_file, "config"))
            assert unserved_training_queue(config, ("gpu",)) is None
            stack = NativeCompose(config, net, base, profiles=("gpu",))
            try:
                with stack.running():
                    api = Api(f"http://{api_host.address}:8080", secrets["AIRFLOW_ADMIN_PASSWORD"])
                    wait_for(lambda: api.call("GET", f"/dags/{DAG}").status_code == 200, 180, f"{DAG} parsed")
                    api.ok("PATCH", f"/dags/{DAG}", json={"is_paused": False})
                    yield {"api": api, "net": net, "stack": stack, "base": base, "secrets": secrets}
            finally:
                _keep_logs(stack)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _keep_logs(stack: NativeCompose) -> None:
    target = ARTIFACTS / "multi-host"
    shutil.rmtree(target, ignore_errors=True)
    if stack.logs.exists():
        shutil.copytree(stack.logs, target)


def _wait_run(api: Api, run_id: str) -> None:
    def done():
        run = api.ok("GET", f"/dags/{DAG}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    def states() -> str:
        return "\n".join(f"{t['task_id']}: {t['state']}" for t in api.task_instances(DAG, run_id))

    run = wait_for(done, 900, f"run {run_id}", states)
    assert run["state"] == "success", states()


def test_a_run_and_a_backfill_on_one_host_per_service(team) -> None:
    api, net, base = team["api"], team["net"], team["base"]
    run_id = "rest-multi-host"
    body = {"dag_run_id": run_id, "logical_date": f"{TRIGGERED}T00:00:00Z", "conf": CONF}
    api.ok("POST", f"/dags/{DAG}/dagRuns", json=body)
    _wait_run(api, run_id)
    backfill = api.ok("POST", "/backfills", json={
        "dag_id": DAG, "from_date": f"{BACKFILL[0]}T00:00:00Z", "to_date": f"{BACKFILL[-1]}T00:00:00Z",
        "dag_run_conf": CONF, "max_active_runs": 2, "reprocess_behavior": "none",
    })  # fmt: skip
    wait_for(lambda: api.ok("GET", f"/backfills/{backfill['id']}")["completed_at"], 1500, "the backfill")
    # (unpausing also made the schedule's run for today, which waits for raw data that never lands here)
    runs = {r["logical_date"][:10]: r for r in api.runs(DAG) if r["run_type"] in ("manual", "backfill")}
    assert sorted(runs) == sorted(str(d) for d in [TRIGGERED, *BACKFILL])
    for day, run in runs.items():
        tis = api.task_instances(DAG, run["dag_run_id"])
        assert run["state"] == "success", (day, [(t["task_id"], t["state"]) for t in tis])
        # each task ran on the host of the worker serving its queue: training on the GPU worker's
        hosts = {t["task_id"]: (t["queue"], t["hostname"]) for t in tis if t["state"] == "success"}
        assert hosts["train"] == ("training", "airflow-gpu-worker"), hosts
        others = {v for k, v in hosts.items() if k != "train"}
        assert others == {("default", "airflow-worker")}, hosts
    _assert_spark_ran_on_the_worker_host(base, net)
    _assert_registered_over_http(team)


def _assert_spark_ran_on_the_worker_host(base: Path, net: Network) -> None:
    """The Spark Connect server is a driver only (its master is the cluster's): its executors ran on the worker
    host, whose executor logs show the tasks they ran."""
    worker = net.hosts["spark-worker"]
    with urllib.request.urlopen(f"http://{net.hosts['spark-master'].address}:8081/json/", timeout=10) as r:
        import json

        master = json.load(r)
    assert [w["host"] for w in master["workers"] if w["state"] == "ALIVE"] == [worker.address], master["workers"]
    (app,) = [a for a in master["activeapps"] if a["name"] == "spark-connect"]
    logs = list((base / "layers" / "spark-worker" / "opt" / "spark" / "work" / app["id"]).glob("*/stderr"))
    assert logs, f"no executor of {app['id']} on the worker host"
    ran = sum(p.read_text(errors="replace").count("Running task") for p in logs)
    assert ran > 0, [p.read_text(errors="replace")[-2000:] for p in logs]


def _assert_registered_over_http(team) -> None:
    """Tasks hold no MLflow store: they logged through the MLflow server, whose host keeps the files; the champion
    is the REST run's model (the backfilled dates are older, and never moved it)."""
    stack, net, base = team["stack"], team["net"], team["base"]
    for worker in ("airflow-worker", "airflow-gpu-worker"):
        env = stack.environment(stack.services[worker])
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and "MLFLOW_BACKEND_STORE_URI" not in env
    stored = list((base / "volumes" / "mlflow-artifacts").rglob("saved_model.pb"))
    assert len(stored) == 1 + len(BACKFILL), stored
    # MLflow's REST API as the tasks call it (Host: mlflow:5000, the tasks' user): MLflow refuses a Host header
    # it does not know (an address included), which is what keeps DNS rebinding out
    session = requests.Session()
    session.auth = ("retrainer", team["secrets"]["MLFLOW_PASSWORD"])
    session.headers["Host"] = "mlflow:5000"
    url = f"http://{net.hosts['mlflow'].address}:5000/api/2.0/mlflow"

    def get(path: str, **params: str) -> dict:
        resp = session.get(f"{url}/{path}", params=params, timeout=30)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:500])
        return resp.json()

    versions = get("model-versions/search", filter=f"name = '{MODEL}'")["model_versions"]
    tags = [{t["key"]: t["value"] for t in v.get("tags", [])} for v in versions]
    assert sorted(t["run_date"] for t in tags) == sorted(str(d) for d in [TRIGGERED, *BACKFILL])
    champion = get("registered-models/alias", name=MODEL, alias="champion")["model_version"]
    assert {t["key"]: t["value"] for t in champion["tags"]}["run_date"] == str(TRIGGERED)
    assert all(v["source"].startswith(("models:/", "mlflow-artifacts:")) for v in versions), versions
    from retrainer.runners import alerts

    (moved,) = alerts.recorded(base / "data", alerts.CHAMPION_CHANGED)  # the champion moved once
    assert moved["details"]["version"] == champion["version"]
