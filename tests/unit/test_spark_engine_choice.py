"""Which Spark a task uses is the deployment's choice, by connection: the apache-spark provider's
``spark_connect`` connection when it is defined (its hook builds the URL), else the run's ``spark_master``.
What the server is started with is checked without starting it (the stages tier starts a real one)."""

from __future__ import annotations

import datetime as dt
import json
import types

import pytest

from retrainer.core.processes import free_ports

CONN = "AIRFLOW_CONN_RETRAINER_SPARK_CONNECT"


def _context() -> dict:
    return {
        "logical_date": dt.datetime(2013, 6, 8, tzinfo=dt.UTC),
        "params": {},
        "run_id": "manual__x",
        "dag": types.SimpleNamespace(dag_id="flight_delay_retrain"),
    }


def test_a_task_uses_the_spark_connect_connection_when_it_is_defined(monkeypatch) -> None:
    from retrainer.runners.airflow_adapter import run_config

    monkeypatch.setenv(CONN, json.dumps({"conn_type": "spark_connect", "host": "sc://10.1.2.3", "port": 15999}))
    monkeypatch.setenv("RETRAINER_SPARK_MASTER", "local[2]")  # the connection wins over the run's master
    assert run_config(_context(), "flight_delay").engines.spark_master == "sc://10.1.2.3:15999/"

    monkeypatch.delenv(CONN)
    assert run_config(_context(), "flight_delay").engines.spark_master == "local[2]"


def test_a_token_and_tls_from_the_connection_reach_the_spark_connect_client(monkeypatch) -> None:
    """The URL the provider's hook builds, parsed by pyspark's own Connect client."""
    from pyspark.sql.connect.client import DefaultChannelBuilder

    from retrainer.runners.airflow_adapter import spark_connect_url

    conn = {"conn_type": "spark_connect", "host": "spark.example", "port": 443, "login": "ml-platform",
            "password": "s3cr3t", "extra": {"use_ssl": True}}  # fmt: skip
    monkeypatch.setenv(CONN, json.dumps(conn))
    url = spark_connect_url()
    channel = DefaultChannelBuilder(url)
    assert (channel.host, channel.endpoint, channel.secure) == ("spark.example", "spark.example:443", True)
    assert channel.token == "s3cr3t" and channel.userId == "ml-platform"


def test_the_embedded_server_binds_loopback_with_the_settings_the_stages_rely_on(tmp_path) -> None:
    from retrainer.devtools.spark_connect import SparkConnectServer
    from retrainer.spark.session import session_settings

    port = free_ports(1)[0]
    server = SparkConnectServer(port, tmp_path)
    argv = server.command()
    assert argv[0].endswith("sbin/start-connect-server.sh") and argv[argv.index("--master") + 1] == "local[*]"
    confs = dict(a.split("=", 1) for a in argv[argv.index("--driver-memory") + 2 :][1::2])
    assert confs["spark.connect.grpc.binding.address"] == "127.0.0.1"
    assert confs["spark.connect.grpc.binding.port"] == str(port)
    assert session_settings().items() <= confs.items()
    assert server.url == f"sc://127.0.0.1:{port}"
    assert not server.listening() and not server.healthy()


@pytest.mark.parametrize("master", ["sc://127.0.0.1:15002", "sc://h:1/;token=t"])
def test_connect_urls_and_master_urls_are_told_apart(master: str) -> None:
    from retrainer.spark.session import is_connect

    assert is_connect(master)
    assert not any(is_connect(m) for m in ("local[*]", "local[2]", "spark://h:7077", "yarn", "k8s://https://h"))


@pytest.mark.parametrize(
    ("master", "bind"),
    [("local[*]", "127.0.0.1"), ("sc://127.0.0.1:15002", "127.0.0.1"), ("spark://127.0.0.1:7077", "127.0.0.1"),
     ("spark://localhost:7077", "127.0.0.1"), ("spark://spark-master:7077", None), ("spark-master:7077", None),
     ("spark://10.0.0.5:7077", None)],
)  # fmt: skip
def test_a_driver_binds_loopback_only_when_its_cluster_is_on_this_machine(monkeypatch, master, bind) -> None:
    """A spark-submit driver for a cluster on other hosts must listen where the executors can reach it (the
    multi-host test showed executors failing to connect back to a driver on 127.0.0.1)."""
    from retrainer.core.config import RunConfig
    from retrainer.data.features_submission import submit_settings
    from retrainer.spark.session import driver_address

    assert driver_address(master) == bind
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    env = submit_settings(RunConfig.build("2013-06-08"), master)["env_vars"]
    assert env.get("SPARK_LOCAL_IP") == bind
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.1.2.3")  # an operator's explicit choice wins
    assert submit_settings(RunConfig.build("2013-06-08"), master)["env_vars"]["SPARK_LOCAL_IP"] == "10.1.2.3"
