"""The embedded Spark Connect server: one warm Spark for every task and run on this machine.

Every task used to start its own Spark driver (10-20 s each, three per run). Instead ``make run``,
``make airflow`` and ``make test`` start one Spark Connect server on 127.0.0.1 if none answers, and
the stages connect to it (``sc://127.0.0.1:<port>``, 0.5-1 s). The server is Spark's own daemon,
started and stopped by the scripts pyspark ships (``sbin/start-connect-server.sh``,
``sbin/stop-connect-server.sh``); its pid file and logs live under the project's state folder
(``.spark-connect/``). ``make stop`` stops it. A failed task does not stop it: the next one reuses it.

    python -m retrainer.devtools.spark_connect up|down|status [--port P] [--state DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from retrainer.core.config import project_home
from retrainer.core.deployment import deployment
from retrainer.spark.session import session_settings

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 15002  # Spark Connect's own default port
START_TIMEOUT = 180.0  # a fresh server answers after 15-20 s on 2 idle cores; much later on busy ones


class ServerNotReady(RuntimeError):
    """The Spark Connect server did not answer in time; the message names its log."""


# The server outlives every run, so it gives back the heap a big run grew once it is idle (JEP 346): G1
# collects after 10 s without a collection unless the machine is busy (load average over 1: a run is
# training beside it), and then shrinks a heap that is mostly free. Measured after a 350-day run: the JVM
# went from 1.28 GiB to 1.0 GiB of RSS within 90 s of the load falling under 1 (heap 377 MiB committed, 107
# used; the rest is the JVM's own); without it, it kept what it had grown to (1.4 GiB) for as long as it ran.
SERVER_JVM_OPTIONS = ("-XX:G1PeriodicGCInterval=10000", "-XX:G1PeriodicGCSystemLoadThreshold=1")
# Nor does it keep the history of every query it ever ran: with the UI off, Spark's status store still keeps
# the last 1000 SQL executions with their plans and metrics (a test server that had run the suite's queries
# held 125,000 of their plan metrics, its old generation 99.75 % full).
SERVER_HISTORY = {"spark.sql.ui.retainedExecutions": "50", "spark.ui.retainedJobs": "100",
                  "spark.ui.retainedStages": "100"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SparkConnectServer:
    """A local Spark Connect server: its port and the folder of its pid file and logs."""

    port: int = DEFAULT_PORT
    state: Path = dataclasses.field(default_factory=lambda: project_home() / ".spark-connect")

    @property
    def url(self) -> str:
        return f"sc://{LOOPBACK}:{self.port}"

    @property
    def spark_home(self) -> Path:
        import pyspark

        return Path(pyspark.__file__).parent

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"

    def _env(self) -> dict[str, str]:
        """The daemon scripts' settings: where pyspark is, where pid and logs go, the venv's Python."""
        return {
            **os.environ,
            "SPARK_HOME": str(self.spark_home),
            "SPARK_LOG_DIR": str(self.log_dir),
            "SPARK_PID_DIR": str(self.state / "pid"),
            "SPARK_IDENT_STRING": f"retrainer-{self.port}",  # one pid file per port: servers side by side
            "SPARK_LOCAL_IP": LOOPBACK,
            "PYSPARK_PYTHON": sys.executable,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }

    def listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1.0)
            return s.connect_ex((LOOPBACK, self.port)) == 0

    def healthy(self) -> bool:
        """A query answers (a listening port alone can be a server still starting, or another program). Asked
        from a child process: a Connect session switches the whole Python process to Connect mode."""
        if not self.listening():
            return False
        session = f"SparkSession.builder.remote({self.url!r}).getOrCreate()"
        probe = f"from pyspark.sql import SparkSession; {session}.range(1).count()"
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120, env=self._env())
        return done.returncode == 0

    def command(self) -> list[str]:
        """``start-connect-server.sh`` with the session settings every stage relies on."""
        conf = {
            "spark.connect.grpc.binding.address": LOOPBACK,
            "spark.connect.grpc.binding.port": str(self.port),
            "spark.ui.enabled": "false",
            "spark.driver.extraJavaOptions": " ".join(SERVER_JVM_OPTIONS),
            **SERVER_HISTORY,
            **session_settings(),  # the defaults; each client session sets them again (spark.session)
        }
        args = [str(self.spark_home / "sbin" / "start-connect-server.sh"), "--master", "local[*]"]
        args += ["--driver-memory", deployment().spark_driver_memory]
        for key, value in conf.items():
            args += ["--conf", f"{key}={value}"]
        return args

    def up(self, timeout: float = START_TIMEOUT) -> bool:
        """Start the server unless one answers already; return once a query succeeds. True when this call
        started it (its caller may then stop it), False when it reused a running one."""
        if self.healthy():
            return False
        if self.listening():
            raise ServerNotReady(f"port {self.port} is taken by something that is not a Spark Connect server")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(self.command(), check=True, env=self._env(), capture_output=True, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            time.sleep(1.0)
        logs = sorted(self.log_dir.glob("*.out"))
        raise ServerNotReady(f"Spark Connect on {self.url} did not answer within {timeout:.0f} s; log: {logs}")

    def down(self) -> None:
        """Stop the server this state folder started (Spark's stop script: pid file, then the process)."""
        script = self.spark_home / "sbin" / "stop-connect-server.sh"
        subprocess.run([str(script)], env=self._env(), capture_output=True, text=True, check=False)
        deadline = time.monotonic() + 60
        while self.listening() and time.monotonic() < deadline:
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrainer.devtools.spark_connect", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--state", type=Path, default=None, help="pid file and logs (default .spark-connect/)")
    args = parser.parse_args(argv)
    server = SparkConnectServer(args.port, args.state) if args.state else SparkConnectServer(args.port)
    if args.action == "up":
        begun = time.monotonic()
        how = f"started in {time.monotonic() - begun:.0f} s" if server.up() else "reused the running server"
        print(f"Spark Connect on {server.url} ({how}; logs in {server.log_dir})")
    elif args.action == "down":
        server.down()
        print(f"Spark Connect on {server.url} stopped")
    else:
        ok = server.healthy()
        print(f"Spark Connect on {server.url}: {'answering' if ok else 'not running'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
