"""The embedded Spark Connect server: started once and reused, not taken down by a client that dies or a
query that fails, stopped by ``down`` (what ``make stop`` runs); and a process talks to Spark one way."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrainer.core.processes import free_ports

LONG_QUERY = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
print("connected", flush=True)
spark.range(10**12).selectExpr("sum(id * id)").collect()
"""


def _pid(state: Path) -> str:
    (pid_file,) = (state / "pid").glob("*.pid")
    return pid_file.read_text().strip()


def test_the_server_is_reused_outlives_its_clients_and_stops(tmp_path: Path) -> None:
    from retrainer.core.deployment import deployment
    from retrainer.devtools.spark_connect import SERVER_JVM_OPTIONS, SparkConnectServer

    server = SparkConnectServer(free_ports(1)[0], tmp_path / "state")
    try:
        assert server.up() is True  # started it
        url, first = server.url, _pid(server.state)
        assert server.up() is False and _pid(server.state) == first  # a second `up` reuses it, starts nothing

        client = subprocess.Popen([sys.executable, "-c", LONG_QUERY, url], stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        time.sleep(2)  # the query is running on the server
        client.kill()  # a task killed mid-query (SIGKILL: no goodbye to the server)
        client.wait(timeout=30)
        failing = subprocess.run(
            [sys.executable, "-c", f"from pyspark.sql import SparkSession as S; S.builder.remote({url!r})"
             ".getOrCreate().sql('select no_such_column from range(1)').collect()"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert failing.returncode != 0 and "no_such_column" in failing.stderr  # a failed task ...
        assert server.healthy() and _pid(server.state) == first  # ... leaves the same server answering
        assert list(server.log_dir.glob("*.out")), "the server's log is under the state folder"
        # The JVM the script started runs with the deployment's heap and gives memory back when idle.
        java = Path(f"/proc/{first}/cmdline").read_bytes().decode().split("\0")
        assert f"-Xmx{deployment().spark_driver_memory}" in java
        assert set(SERVER_JVM_OPTIONS) <= set(java)
    finally:
        server.down()
    assert not server.listening()


def test_a_process_talks_to_spark_one_way(spark) -> None:
    """This test process uses the tests' Connect server; a classic driver beside it is refused up front."""
    from retrainer.spark.session import SparkModeConflict, get_spark

    assert spark.range(3).count() == 3
    with pytest.raises(SparkModeConflict, match="talks to a Spark Connect server"):
        get_spark("local[2]")


def test_a_long_operation_reports_its_progress_in_the_log(spark, caplog) -> None:
    """The server's own progress reports reach the session's handler (registered by get_spark): a query of four
    1.5-s tasks on the server's two slots logs its progress while it runs and its end."""
    import logging

    from retrainer.spark.progress import SparkProgressLog

    (registered,) = [h for h in spark._client._progress_handlers if isinstance(h, SparkProgressLog)]
    fast = SparkProgressLog(every=0, after=0)  # every report, from the first
    spark.registerProgressHandler(fast)
    try:
        with caplog.at_level(logging.INFO, logger="retrainer.spark.progress"):
            sleeps = spark.range(0, 4, 1, 4).selectExpr("reflect('java.lang.Thread', 'sleep', cast(1500 as long))")
            assert len(sleeps.collect()) == 4
    finally:
        spark.removeProgressHandler(fast)
    lines = [r.getMessage() for r in caplog.records]
    assert any(" running " in line and "tasks of 1 stage(s) done" in line for line in lines), lines
    # the end line, with the figures of the server's last periodic report (which may predate the last tasks' end)
    end = re.fullmatch(r"spark: operation \w{8} ended after \d+ s \(last report: ([0-4])/4 tasks of 1 stage\(s\) done, "
                       r"0 MiB read\)", lines[-1])  # fmt: skip
    assert end, lines
    last_running = re.search(r"running \d+ s: (\d)/4", [line for line in lines if " running " in line][-1])
    assert last_running and int(end.group(1)) >= int(last_running.group(1)), lines  # reports only move forward
    assert registered.after >= 10  # the default handler: silent for a query like this one
