"""The SparkSession of this process, from the run's ``spark_master`` setting.

- ``sc://host:port``: a Spark Connect session to a running server (the default of ``make run``,
  ``make airflow`` and the tests: one warm server shared by every task and run; in Airflow the URL comes
  from the ``spark_connect`` connection, see ``runners/airflow_adapter``). Databricks Connect is the same
  URL form (``sc://<workspace>:443/;token=...;x-databricks-cluster-id=...``).
- a master URL (``local[*]``, ``spark://host:7077``, ``yarn``): a classic driver in this process, or
  under ``spark-submit --master ...`` the submitted one.

A Python process talks to Spark one way: pyspark switches the whole process to Connect mode once a
Connect session exists, so asking for the other kind afterwards is refused with a message instead of
failing later in an unrelated call.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from retrainer.core.deployment import deployment

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

CONNECT_SCHEME = "sc://"


class SparkModeConflict(RuntimeError):
    """This process already talks to Spark the other way (Connect vs a classic driver)."""


def is_connect(master: str) -> bool:
    return master.startswith(CONNECT_SCHEME)


def driver_address(master: str) -> str | None:
    """The address a driver for ``master`` binds: loopback when everything it talks to is on this machine (a local
    master, a Spark Connect client, a cluster on loopback); otherwise None, so that Spark takes the host's own
    address, the one executors on other hosts can connect back to (a driver on 127.0.0.1 is unreachable from
    them: its executors fail to connect and the job never runs)."""
    from urllib.parse import urlsplit

    if master.startswith("local") or is_connect(master):
        return "127.0.0.1"
    host = urlsplit(master if "://" in master else f"spark://{master}").hostname or ""
    return "127.0.0.1" if host in ("127.0.0.1", "localhost", "::1") else None


def session_settings() -> dict[str, str]:
    """The SQL settings every stage relies on (UTC dates, dynamic partition overwrite of the feature store)."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(deployment().shuffle_partitions),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
    }


def get_spark(master: str, app_name: str = "retrainer") -> SparkSession:
    if (address := driver_address(master)) is not None:
        os.environ.setdefault("SPARK_LOCAL_IP", address)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    if is_connect(master) and not os.environ.get("PYSPARK_GATEWAY_PORT"):  # under spark-submit its driver wins
        return _connect(master)
    return _classic(master, app_name)


def _connect(url: str) -> Any:
    from pyspark.sql import SparkSession
    from pyspark.sql.utils import is_remote

    if not is_remote() and SparkSession.getActiveSession() is not None:
        raise SparkModeConflict(f"this process already runs a classic Spark driver; cannot also connect to {url}")
    session = SparkSession.builder.remote(url).getOrCreate()
    for key, value in session_settings().items():  # per session: other clients of the server keep theirs
        session.conf.set(key, value)
    from retrainer.spark.progress import watch

    watch(session)  # long operations report their progress in the task's log
    return session


def _classic(master: str, app_name: str) -> Any:
    from pyspark.sql import SparkSession
    from pyspark.sql.utils import is_remote

    if is_remote():
        raise SparkModeConflict(f"this process talks to a Spark Connect server; cannot also start a {master} driver")
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder
    # Under spark-submit the JVM is already up (PYSPARK_GATEWAY_PORT is set) with the submitted
    # master and name; setting them here would override them.
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        builder = builder.master(master).appName(app_name)
    builder = builder.config("spark.ui.showConsoleProgress", "false").config("spark.ui.enabled", "false")
    for key, value in session_settings().items():
        builder = builder.config(key, value)
    return builder.config("spark.driver.memory", deployment().spark_driver_memory).getOrCreate()
