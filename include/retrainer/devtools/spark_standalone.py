"""A Spark standalone master and one worker on 127.0.0.1, started from the pip pyspark's own launcher
(``bin/spark-class``; the pip package has no ``start-master.sh``) on free ports: what the cluster test and
the benchmark submit to. Stop it with :meth:`StandaloneCluster.stop` (or use it as a context manager).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from retrainer.core.processes import free_ports


@dataclasses.dataclass
class StandaloneCluster:
    master_url: str
    ui_url: str
    work_dir: Path
    processes: list[subprocess.Popen]

    @classmethod
    def start(cls, work_dir: Path, cores: int = 2, memory: str = "2g", timeout: float = 90) -> StandaloneCluster:
        import pyspark

        work_dir.mkdir(parents=True, exist_ok=True)
        home = Path(pyspark.__file__).parent
        port, ui, worker_ui = free_ports(3)
        env = os.environ | {
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_WORKER_DIR": str(work_dir / "worker"),
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",  # no REST port on all interfaces
        }
        master_url = f"spark://127.0.0.1:{port}"
        daemons = {
            "master": ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                       "--webui-port", str(ui)],
            "worker": ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                       "--memory", memory, "--webui-port", str(worker_ui), master_url],
        }  # fmt: skip
        cluster = cls(master_url, f"http://127.0.0.1:{ui}", work_dir, [])
        for name, args in daemons.items():
            with open(work_dir / f"{name}.log", "w") as log:
                cluster.processes.append(
                    subprocess.Popen(
                        [str(home / "bin" / "spark-class"), *args],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                )
        try:
            cluster.wait_for_worker(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def status(self) -> dict[str, Any]:
        """The master's JSON status (workers, running and completed applications)."""
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as r:
            return json.load(r)

    def wait_for_worker(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.status().get("aliveworkers", 0) >= 1:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-2000:] for p in self.work_dir.glob("*.log")}
                raise TimeoutError(f"the standalone cluster did not come up in {timeout} s: {logs}")
            time.sleep(1)

    def stop(self) -> None:
        for p in reversed(self.processes):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def __enter__(self) -> StandaloneCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
