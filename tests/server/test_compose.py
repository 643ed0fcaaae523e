"""docker-compose.yaml's own rules, checked on what a real Compose implementation (Debian's docker-compose)
resolves it to, and compared with the settings of `make airflow`'s native stack (retrainer.devtools.local_stack).
test_server_mode.py runs the file itself, one host per service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from retrainer.devtools.local_stack import (
    MLFLOW_ALLOWED_HOSTS,
    MLFLOW_USER,
    TRAINING_QUEUE,
    WITHHELD_FROM_WORKERS,
    Stack,
)
from retrainer.devtools.secrets_file import ensure_secrets
from retrainer.registry.promotion import POOL
from retrainer.training.launchers import GPU_POOL
from support import ROOT
from support.server_mode import OWNERS, require_postgres, team_databases

AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
           "airflow-gpu-worker")  # fmt: skip
WORKERS = ("airflow-worker", "airflow-gpu-worker")  # the Celery workers (local_stack.WORKERS natively)


def _compose_bin() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI"):
            raise AssertionError(
                "docker-compose is not installed: `make test` installs it (apt-get install docker-compose)"
            )
        pytest.skip("docker-compose not installed (make test installs Debian's docker-compose)")
    return found


def _config(env_file: Path, *profiles: str) -> subprocess.CompletedProcess:
    """`docker-compose config` with only ``env_file`` for variables (not the checkout's own .env)."""
    args = [_compose_bin(), "-f", str(ROOT / "docker-compose.yaml"), "--project-directory", str(ROOT)]
    args += [a for p in profiles for a in ("--profile", p)]
    if env_file.exists():
        args += ["--env-file", str(env_file)]
    else:  # an empty project dir: no .env to fall back on
        args[-1] = str(env_file.parent)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTGRES", "RETRAINER_SPARK"))}
    return subprocess.run([*args, "config"], capture_output=True, text=True, env=clean, timeout=120)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> tuple[dict, dict[str, str]]:
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    secrets = ensure_secrets(env_file)
    out = _config(env_file)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout), secrets


def test_compose_refuses_to_start_without_the_generated_secrets(tmp_path: Path) -> None:
    out = _config(tmp_path / ".env")
    assert out.returncode != 0 and "run make secrets first" in out.stderr


def test_the_team_stack_has_every_service(resolved) -> None:
    services = resolved[0]["services"]
    spark = {"spark-master", "spark-worker", "spark-connect"}
    assert set(AIRFLOW) | {"airflow-init", "postgres", "redis", "mlflow"} | spark <= set(services)
    for name in AIRFLOW:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_secrets_come_from_the_env_file_and_are_shared(resolved) -> None:
    """One Fernet key and signing secret for every Airflow container but the Celery workers, which get neither
    (nor the admin password)."""
    services, secrets = resolved
    services = services["services"]
    for name in AIRFLOW:
        env = services[name]["environment"]
        if name in WORKERS:
            assert not set(WITHHELD_FROM_WORKERS) & set(env) and "AIRFLOW_ADMIN_PASSWORD" not in env
            held = "".join(str(v) for v in env.values())
            assert secrets["AIRFLOW_JWT_SECRET"] not in held and secrets["AIRFLOW_FERNET_KEY"] not in held
        else:
            assert env["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW_FERNET_KEY"]  # one key for them all
            assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["AIRFLOW_JWT_SECRET"]
        assert f":{secrets['POSTGRES_PASSWORD']}@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert services[name]["user"] == f"{secrets['AIRFLOW_UID']}:0"  # ./data stays owned by the host user
    postgres = services["postgres"]["environment"]
    assert postgres["AIRFLOW_DB_PASSWORD"] == secrets["POSTGRES_PASSWORD"]  # Airflow's role
    assert postgres["MLFLOW_DB_PASSWORD"] == secrets["MLFLOW_DB_PASSWORD"]
    assert postgres["POSTGRES_USER"] == "postgres"  # the superuser, whose password no other service holds
    assert postgres["POSTGRES_PASSWORD"] == secrets["POSTGRES_ADMIN_PASSWORD"]


def test_each_service_holds_only_its_own_database_login(resolved) -> None:
    """Airflow's containers log in as airflow, MLflow as mlflow (from its environment, not its command line);
    the superuser's password stays in the postgres container, MLflow's role's in MLflow's two containers."""
    services, secrets = resolved
    services = services["services"]
    mlflow_env = services["mlflow"]["environment"]
    login = f"mlflow:{secrets['MLFLOW_DB_PASSWORD']}@postgres:5432/"
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == f"postgresql+psycopg2://{login}mlflow"
    assert "postgresql+psycopg2://mlflow:$$MLFLOW_DB_PASSWORD@postgres:5432/mlflow_auth" in services["mlflow-init"][
        "command"][0]  # fmt: skip
    assert not any("backend-store-uri" in c or "@postgres" in c for c in services["mlflow"]["command"])
    for name, service in services.items():
        held = json.dumps(service.get("environment", {})) + json.dumps(service.get("command", ""))
        assert (secrets["POSTGRES_ADMIN_PASSWORD"] in held) == (name == "postgres"), name
        assert (secrets["MLFLOW_DB_PASSWORD"] in held) == (name in ("postgres", "mlflow", "mlflow-init")), name
    mounts = json.dumps(services["postgres"]["volumes"])
    assert "postgres-init.sh" in mounts and "postgres-roles.sql" in mounts


def test_the_database_roles_own_their_databases_and_reach_no_other() -> None:
    """docker/postgres-roles.sql, run against the real PostgreSQL: Airflow's role and MLflow's each connect to
    their own databases only, and neither is a superuser nor may create databases or roles."""
    import psycopg2

    require_postgres()
    with team_databases() as dbs:
        for role in dbs.roles:
            for database, owner in OWNERS.items():
                dsn = dbs.url(database, role, driver="")
                if owner != role:
                    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                        psycopg2.connect(dsn)
                    continue
                conn = psycopg2.connect(dsn)
                with conn, conn.cursor() as cur:
                    cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = user")
                    assert cur.fetchone() == (False, False, False), role
                    cur.execute("CREATE TABLE owned (x int)")  # its own tables (Airflow's and MLflow's migrations)
                conn.close()


def test_airflow_settings_match_the_native_stack_the_tests_run(resolved, tmp_path) -> None:
    services, secrets = resolved
    native = Stack(
        project=ROOT, airflow_home=tmp_path, data_root=tmp_path, airflow_db="postgresql+psycopg2://x@y/airflow",
        mlflow_backend="postgresql+psycopg2://x@y/mlflow", mlflow_artifacts=tmp_path, secrets=secrets,
        executor="CeleryExecutor", celery_broker="redis://127.0.0.1:6379/0", tasks_use_mlflow_server=True,
    ).settings()  # fmt: skip
    airflow_keys = {k for k in native if k.startswith("AIRFLOW__")} - {"AIRFLOW__API__HOST", "AIRFLOW__API__PORT"}
    same_value = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
                  "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
                  "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS")  # fmt: skip
    for name in AIRFLOW:
        env = services["services"][name]["environment"]
        keys = airflow_keys - set(WITHHELD_FROM_WORKERS) if name in WORKERS else airflow_keys
        assert keys <= set(env), (name, sorted(keys - set(env)))
        for key in same_value:
            if key in keys:
                assert str(env[key]).lower() == str(native[key]).lower(), (name, key)
        # tasks reach the Execution API by its service name; the browser's address is the published port
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:8080"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        scheme = native["AIRFLOW__CELERY__RESULT_BACKEND"].split("://")[0]  # the driver the Celery test ran with
        assert scheme == "db+postgresql+psycopg2" and env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith(scheme + "://")


def test_mlflow_accepts_the_host_name_tasks_use_and_its_volume_is_writable(resolved) -> None:
    services = resolved[0]["services"]
    command = services["mlflow"]["command"]
    allowed = next(c for c in command if c.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert allowed == list(MLFLOW_ALLOWED_HOSTS)  # the same list the native MLflow server runs with
    host = services["airflow-scheduler"]["environment"]["MLFLOW_TRACKING_URI"].removeprefix("http://")
    assert host in allowed and host.split(":")[0] in allowed
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert "mlflow:5000" in " ".join(services["mlflow"]["healthcheck"]["test"])  # checks what tasks will send
    assert "chown" in " ".join(services["mlflow-init"]["command"])
    assert services["mlflow"]["depends_on"]["mlflow-init"]["condition"] == "service_completed_successfully"


def test_mlflow_authenticates_and_tasks_use_a_user_that_is_not_its_admin(resolved, tmp_path) -> None:
    services, secrets = resolved
    services = services["services"]
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_AUTH_CONFIG_PATH"].startswith("/opt/mlflow/auth/")
    init = services["mlflow-init"]["command"][0]
    assert "default_permission = READ" in init and "auth_cache_ttl_seconds = 60" in init  # as the native stack
    native = Stack(
        project=ROOT, airflow_home=tmp_path, data_root=tmp_path, airflow_db="sqlite://", mlflow_backend="sqlite://",
        mlflow_artifacts=tmp_path, secrets=secrets, tasks_use_mlflow_server=True, mlflow_auth=True,
    ).settings()  # fmt: skip
    for name in AIRFLOW:
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == native["MLFLOW_TRACKING_USERNAME"] == MLFLOW_USER
        assert env["MLFLOW_TRACKING_PASSWORD"] == native["MLFLOW_TRACKING_PASSWORD"] == secrets["MLFLOW_PASSWORD"]
        assert secrets["MLFLOW_ADMIN_PASSWORD"] not in json.dumps(env)  # the admin's password stays with MLflow
        assert services[name]["depends_on"]["mlflow-users"]["condition"] == "service_completed_successfully"
    assert secrets["MLFLOW_ADMIN_PASSWORD"] not in json.dumps(native)


def test_workers_queues_and_the_gpu_reservation(resolved) -> None:
    services = resolved[0]["services"]
    gpu = services["airflow-gpu-worker"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == TRAINING_QUEUE
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    default = services["airflow-worker"]["command"]
    assert default[default.index("--queues") + 1] == "default"
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "gpu"  # only with --profile gpu, CUDA build
    env = services["airflow-scheduler"]["environment"]
    assert env["RETRAINER_SPARK_MASTER"] == "sc://spark-connect:15002"
    assert env["AIRFLOW_CONN_RETRAINER_SPARK_CONNECT"] == "spark-connect://spark-connect:15002"
    connect = " ".join(services["spark-connect"]["command"])
    assert "SparkConnectServer" in connect and "--master spark://spark-master:7077" in connect
    assert "spark.connect.grpc.binding.port=15002" in connect and "spark.driver.host=spark-connect" in connect
    assert f"airflow pools set {POOL} 1" in " ".join(services["airflow-init"]["command"])
    assert f"airflow pools set {GPU_POOL} 1" in " ".join(services["airflow-init"]["command"])


def test_alert_channels_from_the_env_file_reach_every_airflow_container(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    ensure_secrets(env_file)
    with env_file.open("a") as fh:
        fh.write("RETRAINER_ALERT_CHANNELS=smtp\nRETRAINER_ALERT_EMAIL=ml-oncall@example.com\n")
    out = _config(env_file)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    for name in AIRFLOW:  # the dag-processor builds the notifiers, the workers send them
        env = services[name]["environment"]
        assert env["RETRAINER_ALERT_CHANNELS"] == "smtp" and env["RETRAINER_ALERT_EMAIL"] == "ml-oncall@example.com"
        assert env["RETRAINER_SLACK_CHANNEL"] == "#ml-alerts"  # the notifier's own default when unset


def test_ports_bind_to_loopback(resolved) -> None:
    for name, svc in resolved[0]["services"].items():
        for port in svc.get("ports", []):
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)


@pytest.mark.parametrize(
    ("profiles", "queue", "served_by"),
    [((), None, "airflow-worker"), (("gpu",), "training", "airflow-gpu-worker"), ((), "training", None),
     (("gpu",), None, "airflow-worker")],
)  # fmt: skip
def test_training_goes_to_a_queue_a_started_worker_serves(tmp_path, profiles, queue, served_by) -> None:
    """A CPU-only host trains on the default worker; with the gpu profile and RETRAINER_TRAINING_QUEUE=training on
    the GPU worker; the queue without the profile is caught (train would wait for a worker forever)."""
    from support.compose_native import unserved_training_queue

    env_file = tmp_path / ".env"
    ensure_secrets(env_file)
    if queue:
        with env_file.open("a") as fh:
            fh.write(f"RETRAINER_TRAINING_QUEUE={queue}\n")
    out = _config(env_file, *profiles)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    why = unserved_training_queue(config, profiles)
    if served_by is None:
        assert why is not None and "'training', which no worker serves" in why
    else:
        assert why is None, why
        worker = config["services"][served_by]["command"]
        assert worker[worker.index("--queues") + 1] == (queue or "default")


def test_the_dockerfile_builds_for_any_architecture_with_a_gpu_target() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "-amd64" not in text and "-arm64" not in text and "ENV JAVA_HOME=/usr/lib/jvm/java-17\n" in text
    stages = [line.split()[-1] for line in text.splitlines() if line.startswith("FROM ")]
    assert stages == ["runtime", "gpu", "cpu"]  # the last stage is what a plain build gives: the CPU image
    assert "tensorflow[and-cuda]" in text.split("AS gpu")[1].split("FROM runtime AS cpu")[0]
