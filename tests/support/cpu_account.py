"""CPU seconds per test, written to ``test-artifacts/test-cpu-<process>.tsv``: what to cut in a suite that is
CPU-bound on two cores (a test's wall time depends on what runs beside it; its CPU time much less).

Per test (set-up, call and tear-down): the test process's own CPU, its reaped child processes' CPU (``airflow``
and ``retrainer`` subprocesses, the servers a fixture stops, and what they reaped in turn: a Celery worker's
forked tasks), and the shared Spark Connect server's JVM over the same interval. The JVM serves both test
processes at once, so its column overlaps between them; the other two do not. A module-scoped fixture is counted
in the test that first needs it, its tear-down in the last: sum by file (``bench/test_cpu.py``).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _rusage_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _jvm_cpu(port: int) -> float:
    """CPU seconds of the Spark Connect server listening on ``port`` (0 when none is found)."""
    marker = f"spark.connect.grpc.binding.port={port}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if marker not in cmdline or b"java" not in cmdline.split(b"\0", 1)[0]:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


class CpuAccount:
    """The pytest plugin: one row per test, written when the session ends."""

    def __init__(self, out_dir: Path, spark_port: int) -> None:
        self.out_dir, self.spark_port = out_dir, spark_port
        self.rows: list[tuple[str, float, float, float, float]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        start = (time.monotonic(), _rusage_cpu(resource.RUSAGE_SELF), _rusage_cpu(resource.RUSAGE_CHILDREN))
        jvm = _jvm_cpu(self.spark_port)
        yield
        wall = time.monotonic() - start[0]
        own = _rusage_cpu(resource.RUSAGE_SELF) - start[1]
        children = _rusage_cpu(resource.RUSAGE_CHILDREN) - start[2]
        self.rows.append((item.nodeid, wall, own, children, max(_jvm_cpu(self.spark_port) - jvm, 0.0)))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.rows:
            return
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines = ["test\twall_s\tcpu_own_s\tcpu_children_s\tcpu_spark_jvm_s"]
        lines += [f"{node}\t{w:.2f}\t{o:.2f}\t{c:.2f}\t{j:.2f}" for node, w, o, c, j in self.rows]
        (self.out_dir / f"test-cpu-{worker}.tsv").write_text("\n".join(lines) + "\n")
