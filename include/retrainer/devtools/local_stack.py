"""Airflow and MLflow as servers on this machine: what ``make airflow`` runs, with the Airflow settings that
``docker-compose.yaml`` gives the containers (the compose test compares them).

The components run under honcho's process manager (the Procfile runner): it starts them, routes their output,
and on Ctrl-C (or when one of them exits) stops them all. Everything listens on 127.0.0.1. Secrets (the API's
JWT secret, the Fernet key, the admin password) are generated once per checkout into ``.env`` (git-ignored, mode
0600; docker compose reads the same file) and never written in code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from retrainer.core.config import data_root_from_env, project_home
from retrainer.core.deployment import deployment
from retrainer.devtools.secrets_file import ensure_secrets
from retrainer.devtools.spark_connect import DEFAULT_PORT, SparkConnectServer
from retrainer.registry.promotion import POOL as PROMOTION_POOL
from retrainer.runners.preload import CELERY_CONFIG_OPTION
from retrainer.training.launchers import GPU_POOL

LOOPBACK = "127.0.0.1"
ADMIN = "admin"
TRAINING_QUEUE = "training"  # the Celery queue of the workers that train (the GPU workers in compose)
# Not in a Celery worker's environment (docker-compose.yaml's x-airflow-worker-env): it runs each task with the
# token the scheduler signed for it and reads connections and variables through the Execution API, so it needs
# neither the token-signing secret nor the Fernet key; a task (or whoever takes a worker) cannot mint tokens or
# decrypt the metadata database.
WITHHELD_FROM_WORKERS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY")
MLFLOW_USER = "retrainer"  # the tasks' MLflow user under basic auth: not an admin, owns what it creates
# The names a container network uses for the MLflow server, besides localhost and IPs (MLflow's default).
MLFLOW_ALLOWED_HOSTS = ("mlflow", "mlflow:5000", "localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*")


def _venv_bin(name: str = "") -> str:
    """A program of this interpreter's environment (the venv's ``bin``), or that folder."""
    return str(Path(sys.executable).parent / name)


@dataclasses.dataclass(frozen=True)
class Stack:
    """One deployment's servers. Defaults are the embedded ones (SQLite, LocalExecutor)."""

    project: Path  # the checkout: dags/ and plugins/
    airflow_home: Path
    data_root: Path
    airflow_db: str  # SQLAlchemy URL of Airflow's metadata database
    mlflow_backend: str  # MLflow's backend store URI
    mlflow_artifacts: Path
    secrets: dict[str, str]
    api_port: int = 8080
    mlflow_port: int = 5000
    executor: str = "LocalExecutor"
    celery_broker: str | None = None  # redis://... with the CeleryExecutor
    tasks_use_mlflow_server: bool = False  # tasks log over HTTP (server mode) or to the store directly
    # MLflow's basic-auth app: every request authenticated; tasks log as MLFLOW_USER, the admin password stays
    # with the MLflow server (and whoever creates users); users and grants in mlflow_auth_db (SQLAlchemy URL)
    mlflow_auth: bool = False
    mlflow_auth_db: str | None = None
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{LOOPBACK}:{self.mlflow_port}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_url if self.tasks_use_mlflow_server else self.mlflow_backend

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"

    @property
    def mlflow_auth_file(self) -> Path:
        return self.airflow_home / "mlflow_basic_auth.ini"

    def mlflow_env(self) -> dict[str, str]:
        """The MLflow server's environment: its backend store (its own database login: in the environment, not
        on the command line every local user can read), its auth settings, none of Airflow's secrets."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLFLOW_TRACKING_"))}
        env["MLFLOW_BACKEND_STORE_URI"] = self.mlflow_backend
        if self.mlflow_auth:
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self.mlflow_auth_file)
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = self.secrets["MLFLOW_FLASK_SECRET_KEY"]
        return env

    def env(self) -> dict[str, str]:
        """The environment of an Airflow component and the tasks it runs."""
        path = {"PATH": f"{_venv_bin()}:{os.environ.get('PATH', '')}"}  # components start `airflow ...` subprocesses
        return {**os.environ, **path, **self.settings()}

    def settings(self) -> dict[str, str]:
        """What this stack sets (docker-compose.yaml sets the same Airflow keys in its containers)."""
        env = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.project / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.project / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["AIRFLOW_FERNET_KEY"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_db,
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["AIRFLOW_JWT_SECRET"],
            "RETRAINER_HOME": str(self.project),
            "RETRAINER_DATA_ROOT": str(self.data_root),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            # the UI this stack serves, for the tasks' links in Airflow (its store may be a file the browser can't open)
            "RETRAINER_MLFLOW_UI_URL": deployment().mlflow_ui_url or self.mlflow_url,
            **(
                {"MLFLOW_TRACKING_USERNAME": MLFLOW_USER, "MLFLOW_TRACKING_PASSWORD": self.secrets["MLFLOW_PASSWORD"]}
                if self.mlflow_auth
                else {}
            ),  # fmt: skip
            "SPARK_LOCAL_IP": LOOPBACK,
            "AIRFLOW_CONN_RETRAINER_SPARK": os.environ.get(
                "AIRFLOW_CONN_RETRAINER_SPARK", json.dumps({"conn_type": "spark", "host": "local[2]"})
            ),
            # the warm Spark every Spark task connects to (devtools/spark_connect.py), when one is set up
            **{k: v for k, v in os.environ.items() if k == "AIRFLOW_CONN_RETRAINER_SPARK_CONNECT"},
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "GX_ANALYTICS_ENABLED": "False",
        }
        if self.celery_broker:
            env["AIRFLOW__CELERY__BROKER_URL"] = self.celery_broker
            # keep the driver: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + self.airflow_db
            env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = CELERY_CONFIG_OPTION  # task libraries imported once
        return env | self.extra_env

    def commands(self) -> dict[str, list[str]]:
        """Each long-running component. Log servers are skipped: logs are files on this machine, and
        Airflow's log server would listen on all interfaces. (The Celery workers of the team stack are
        docker-compose.yaml's, which the server tests run natively.)"""
        airflow = _venv_bin("airflow")
        out = {
            "api-server": [airflow, "api-server", "--host", LOOPBACK, "--port", str(self.api_port), "--workers", "1"],
            "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
            "mlflow": self.mlflow_command(),
        }
        return out

    def mlflow_command(self) -> list[str]:
        return [
            _venv_bin("mlflow"), "server",
            "--artifacts-destination", self.mlflow_artifacts.as_uri(),
            "--host", LOOPBACK, "--port", str(self.mlflow_port), "--workers", "1",
            "--allowed-hosts", ",".join(MLFLOW_ALLOWED_HOSTS),
            *(["--app-name", "basic-auth"] if self.mlflow_auth else []),
        ]  # fmt: skip

    def write_mlflow_auth(self) -> None:
        """MLflow's basic-auth settings (mode 0600): its admin, where users live, and read-only by default (only
        an owner or a grant writes). Not NO_PERMISSIONS: then reading a model that does not exist yet answers 403,
        not 404, and a first run could not tell "no champion yet" from an outage (which fails the gate)."""
        db = self.mlflow_auth_db or f"sqlite:///{self.airflow_home / 'mlflow-auth.db'}"
        body = (
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {db}\nadmin_username = {ADMIN}\n"
            f"admin_password = {self.secrets['MLFLOW_ADMIN_PASSWORD']}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"  # else every request pays a ~0.1 s password hash check
        )
        self.mlflow_auth_file.write_text(body)
        self.mlflow_auth_file.chmod(0o600)

    def ensure_mlflow_user(self) -> None:
        """Create the tasks' MLflow user (as the admin, once): it owns, and so may manage, what it creates."""
        import base64

        token = base64.b64encode(f"{ADMIN}:{self.secrets['MLFLOW_ADMIN_PASSWORD']}".encode()).decode()
        body = json.dumps({"username": MLFLOW_USER, "password": self.secrets["MLFLOW_PASSWORD"]}).encode()
        request = urllib.request.Request(
            f"{self.mlflow_url}/api/2.0/mlflow/users/create", data=body, method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            if "already exists" not in exc.read().decode(errors="replace"):  # a restart: the user is there
                raise

    def prepare(self) -> None:
        """Migrate the database, write the admin's password, create the promotion and GPU pools."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
        self.passwords_file.write_text(json.dumps({ADMIN: self.secrets["AIRFLOW_ADMIN_PASSWORD"]}))
        self.passwords_file.chmod(0o600)
        if self.mlflow_auth:
            self.write_mlflow_auth()
        self.airflow("db", "migrate")
        self.airflow("pools", "set", PROMOTION_POOL, "1", "one champion move at a time (retrainer register)")
        gpu_slots = str(deployment().gpu_pool_slots)
        self.airflow("pools", "set", GPU_POOL, gpu_slots, "training runs on GPUs at once (TensorFlowTrainOperator)")

    def airflow(self, *args: str, timeout: float = 300) -> str:
        argv = [_venv_bin("airflow"), *args]
        proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


class _LogFiles:
    """honcho's printer for ``make airflow``: each component's lines go to its own log file (Airflow's components
    are verbose), honcho's own lines (started, stopped, signals) and ours to the terminal."""

    def __init__(self, log_dir: Path, terminal: Any) -> None:
        from honcho.printer import Printer

        self.terminal = Printer(terminal)
        self.log_dir = log_dir
        self.files: dict[str, Any] = {}
        self.width = 0

    def write(self, message: Any) -> None:
        if message.name in ("system", "retrainer"):
            self.terminal.width = self.width
            self.terminal.write(message)
            return
        if message.name not in self.files:
            self.files[message.name] = open(self.log_dir / f"{message.name}.log", "w", buffering=1)  # noqa: SIM115
        data = message.data.decode(errors="replace") if isinstance(message.data, bytes) else message.data
        self.files[message.name].write(data)


def supervise(stack: Stack, log_dir: Path, ready_message: str = "", timeout: float = 240) -> int:
    """Run every component under honcho's manager until Ctrl-C, SIGTERM or one of them exits; return honcho's exit
    code. Once the API and MLflow answer, ``ready_message`` is printed; if they do not within ``timeout``, every
    component is stopped."""
    import datetime as dt
    import shlex
    import threading

    import honcho.manager
    from honcho.printer import Message

    # honcho SIGKILLs what is still running 5 s after its SIGTERM; the scheduler needs longer to stop its tasks
    honcho.manager.KILL_WAIT = 30
    log_dir.mkdir(parents=True, exist_ok=True)
    manager = honcho.manager.Manager(_LogFiles(log_dir, sys.stdout))
    for name, argv in stack.commands().items():
        env = stack.mlflow_env() if name == "mlflow" else stack.env()
        manager.add_process(name, "exec " + shlex.join(argv), env=env, cwd=str(stack.project))

    def say(text: str) -> None:
        manager.events.put(Message(type="line", data=text, time=dt.datetime.now(), name="retrainer", colour=None))

    def announce() -> None:
        deadline = time.monotonic() + timeout
        urls = (f"{stack.api_url}/api/v2/version", f"{stack.mlflow_url}/health")
        while not all(_answers(url) for url in urls):
            if time.monotonic() > deadline:
                say(f"the API or MLflow did not answer within {timeout:.0f} s: stopping; logs in {log_dir}\n")
                manager.terminate()
                return
            time.sleep(1)
        if stack.mlflow_auth:
            stack.ensure_mlflow_user()
        say(ready_message)

    threading.Thread(target=announce, daemon=True).start()
    manager.loop()
    return int(manager.returncode or 0)


def embedded(project: Path) -> Stack:
    """``make airflow``: Airflow on SQLite with the LocalExecutor, MLflow's UI over the SQLite store."""
    home = Path(os.environ.get("AIRFLOW_HOME") or project / ".airflow")
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project / '.mlflow' / 'mlflow.db'}"
    return Stack(
        project=project,
        airflow_home=home,
        data_root=Path(data_root_from_env() or project / "data"),
        airflow_db=f"sqlite:///{home / 'airflow.db'}",
        mlflow_backend=tracking,
        mlflow_artifacts=project / ".mlflow" / "artifacts",
        secrets=ensure_secrets(project / ".env"),
        api_port=int(os.environ.get("AIRFLOW_PORT", "8080")),
        mlflow_port=int(os.environ.get("MLFLOW_PORT", "5000")),
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m retrainer.devtools.local_stack", description=__doc__)
    parser.add_argument(
        "command", choices=("secrets", "prepare", "up"),
        help="secrets: write .env once; prepare: migrate Airflow's database, create the pool; up: run until Ctrl-C",
    )  # fmt: skip
    args = parser.parse_args(argv)
    project = project_home()
    if args.command == "secrets":
        ensure_secrets(project / ".env")
        print(f"secrets in {project / '.env'} (mode 0600, git-ignored)")
        return 0
    stack = embedded(project)
    stack.prepare()
    if args.command == "prepare":
        print(f"Airflow database {stack.airflow_db} migrated, pool {PROMOTION_POOL} ready")
        return 0
    stack.airflow("dags", "reserialize")
    spark = SparkConnectServer(int(os.environ.get("SPARK_CONNECT_PORT", DEFAULT_PORT)))
    reused = not spark.up()  # make run may have left one running: use it, and leave it to make stop
    logs = stack.airflow_home / "logs" / "servers"
    how = "Spark Connect, already running" if reused else "Spark Connect"
    ready = (
        f"Airflow  {stack.api_url}   login: {ADMIN} / {stack.secrets['AIRFLOW_ADMIN_PASSWORD']} (from .env)\n"
        f"MLflow   {stack.mlflow_url}\n"
        f"Spark    {spark.url} ({how}; logs in {spark.log_dir})\n"
        f"logs     {logs}   Ctrl-C stops everything\n"
    )
    try:
        code = supervise(stack, logs, ready)
        print("stopped", flush=True)
    finally:
        if not reused:  # Ctrl-C stops the Spark Connect server it started
            spark.down()
    return 0 if code in (0, 130, 143) else code


if __name__ == "__main__":
    raise SystemExit(main())
