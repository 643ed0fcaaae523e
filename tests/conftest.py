"""Shared fixtures: one Airflow home, one landed data root and one Spark session per test run.

Environment is set at import time, before anything imports Airflow, so every test (and every task
that ``dag.test()`` runs in this process) sees the same embedded engines under a temporary folder.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import LAND_END, LAND_START, ROOT, SPARK_CONNECT_PORT, SPARK_CONNECT_URL, TIERS, small_config
from support.cpu_account import CpuAccount

SESSION_DIR = Path(tempfile.mkdtemp(prefix="retrainer-tests-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "RETRAINER_HOME": str(SESSION_DIR),
        "RETRAINER_DATA_ROOT": str(SESSION_DIR / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{SESSION_DIR / '.mlflow' / 'mlflow.db'}",
        "RETRAINER_SPARK_MASTER": SPARK_CONNECT_URL,
        "SPARK_CONNECT_PORT": str(SPARK_CONNECT_PORT),
        "AIRFLOW_CONN_RETRAINER_SPARK_CONNECT": json.dumps(
            {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": SPARK_CONNECT_PORT}
        ),
        "RETRAINER_SHUFFLE_PARTITIONS": "4",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "AIRFLOW_CONN_RETRAINER_SPARK": '{"conn_type": "spark", "host": "local[2]"}',
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    }
)

# py4j logs while the interpreter shuts down, after pytest closed the captured streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return SESSION_DIR


@pytest.fixture(scope="session")
def landed(session_dir: Path) -> Path:
    """A data root with raw partitions for LAND_START..LAND_END (shared; tests must not modify it)."""
    from retrainer.data.landing import land

    root = session_dir / "landed"
    land(root, LAND_START, LAND_END)
    return root


ENGINE_TIERS = ("stages", "e2e", "server")  # the tiers whose tests use Spark


@pytest.fixture(scope="session")
def spark_connect_server() -> Iterator[str]:
    """One Spark Connect server for the whole session (every Spark stage, every task of every DAG run);
    started unless one answers on the tests' port, stopped at the end if this session started it."""
    from retrainer.devtools.spark_connect import SparkConnectServer

    server = SparkConnectServer(SPARK_CONNECT_PORT, SESSION_DIR / "spark-connect")
    started = server.up()
    yield server.url
    if started:
        server.down()


@pytest.fixture(autouse=True)
def _spark_for_engine_tiers(request: pytest.FixtureRequest) -> None:
    if any(request.node.get_closest_marker(tier) for tier in ENGINE_TIERS):
        request.getfixturevalue("spark_connect_server")


@pytest.fixture(scope="session")
def spark(spark_connect_server: str):
    from retrainer.spark.session import get_spark

    session = get_spark(spark_connect_server)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def airflow_db(session_dir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ)
    return session_dir / "airflow"


@pytest.fixture(scope="session")
def chain_root(session_dir: Path, landed: Path) -> Path:
    """A data root sharing the landed raw files, for the stage-by-stage chain (train, evaluate, ...)."""
    root = session_dir / "chain"
    root.mkdir(exist_ok=True)
    if not (root / "raw").exists():
        (root / "raw").symlink_to(landed / "raw")
    return root


@pytest.fixture(scope="session")
def chain_tracking(session_dir: Path) -> str:
    return f"sqlite:///{session_dir / 'chain-mlflow' / 'mlflow.db'}"


@pytest.fixture(scope="session")
def validated(spark, chain_root: Path, chain_tracking: str):
    """Features for RUN_DATE, built and validated once for every later stage's tests."""
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.features import build_features
    from retrainer.stages.validate import validate_features

    cfg = small_config(chain_root, chain_tracking)
    return validate_features(build_features(check_raw_days(cfg), cfg), cfg)


def pytest_configure(config: pytest.Config) -> None:
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {what}")
    _share_one_spark_connect_server(config)
    artifacts = Path(os.environ.get("RETRAINER_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    config.pluginmanager.register(CpuAccount(artifacts, SPARK_CONNECT_PORT), "retrainer-cpu-account")


_SHARED_SERVER: list = []  # the server the xdist controller started for its workers, stopped when it ends


def _share_one_spark_connect_server(config: pytest.Config) -> None:
    """Under ``make test``'s worker processes (pytest-xdist), one Spark Connect server for all of them, started
    here by the controller before it starts the workers, which inherit its port and find it answering (their
    ``spark_connect_server`` fixture reuses it and leaves it running); stopped when the controller ends. One JVM
    warmed up once instead of one per worker, its two task slots shared instead of two JVMs' four on two cores.
    A fixed port (``RETRAINER_TEST_SPARK_CONNECT_PORT``) is left to whoever runs that server."""
    is_controller = not hasattr(config, "workerinput")
    fixed_port = "RETRAINER_TEST_SPARK_CONNECT_PORT" in os.environ
    if not (is_controller and config.getoption("numprocesses", None)) or fixed_port:
        return
    from retrainer.devtools.spark_connect import SparkConnectServer

    os.environ["RETRAINER_TEST_SPARK_CONNECT_PORT"] = str(SPARK_CONNECT_PORT)  # the workers' support module reads it
    server = SparkConnectServer(SPARK_CONNECT_PORT, SESSION_DIR / "spark-connect")
    if server.up():
        _SHARED_SERVER.append(server)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _SHARED_SERVER:
        _SHARED_SERVER.pop().down()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the folder it lives in, so ``-m`` selects tiers."""
    tests_dir = Path(__file__).parent
    for item in items:
        tier = Path(item.fspath).relative_to(tests_dir).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in a tier folder ({', '.join(TIERS)})")
        item.add_marker(getattr(pytest.mark, tier))
    # Under ``make test``'s two processes (pytest-xdist, a file at a time, queued in collection order by
    # ``--no-loadscope-reorder``): the longest files first, so that the server tier's minutes of waiting on
    # schedulers overlap the other files instead of following them on one process while the other idles.
    items.sort(key=lambda item: _first_to_last(Path(item.fspath).relative_to(tests_dir)))


# The order files start in under ``make test`` (measured: the server-mode file is the longest by minutes)
FIRST = ("server/test_server_mode.py", "server/test_make_airflow.py", "server", "e2e", "stages", "dags", "unit")


def _first_to_last(path: Path) -> int:
    return next(i for i, prefix in enumerate(FIRST) if path.as_posix().startswith(prefix))
