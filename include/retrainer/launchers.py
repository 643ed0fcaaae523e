"""Where a stage's work runs: a :class:`Launcher`, chosen by config (``engines.launcher``).

A launcher starts an *entry point* (a module with ``run(cfg)`` and ``main(argv)``) for a run:

- ``in_process``: calls ``run(cfg)`` in this process (the default; one worker);
- ``local_processes``: starts ``engines.num_workers`` processes ``python -m <entry point> <argv>``,
  each with its own TF_CONFIG on free loopback ports (MultiWorkerMirroredStrategy), streams each
  worker's output into this process's log with a ``[worker i]`` prefix (and into
  ``worker_logs/``), and stops every worker if one fails, the time limit passes or this process
  is interrupted or dies.

Stages do not know which one runs them; a cluster launcher (Kubernetes pods, say) is one more class
here that builds the same argv and TF_CONFIG for pods.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Protocol

from retrainer.config import RunConfig
from retrainer.layout import RunLayout
from retrainer.training.strategy import tf_config

log = logging.getLogger(__name__)


class WorkersFailed(RuntimeError):
    """One or more worker processes failed or timed out; the message holds the end of their logs."""


class Launcher(Protocol):
    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        """Run ``entrypoint`` for this run; return when every worker succeeded, raise otherwise."""


class InProcess:
    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        importlib.import_module(entrypoint).run(cfg)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the kernel kills the worker if the launching process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalProcesses:
    def __init__(self, timeout: float = 4 * 3600, grace: float = 10.0) -> None:
        self.timeout, self.grace = timeout, grace

    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        n = cfg.engines.num_workers
        workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
        log_dir = RunLayout.of(cfg).worker_logs
        log_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", entrypoint, *cfg.to_argv()]
        procs: list[subprocess.Popen[str]] = []
        pumps: list[threading.Thread] = []
        logs = [log_dir / f"worker-{i}.log" for i in range(n)]
        log.info("starting %d worker(s) of %s on %s (logs also in %s)", n, entrypoint, workers, log_dir)
        try:
            for i in range(n):
                env = dict(os.environ)
                if n > 1:
                    env["TF_CONFIG"] = json.dumps(tf_config(workers, i))
                    env["CUDA_VISIBLE_DEVICES"] = ""  # local workers share one machine: CPU only
                proc = subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                    preexec_fn=_die_with_parent,
                )  # fmt: skip
                procs.append(proc)
                pump = threading.Thread(target=_pump, args=(i, proc.stdout, logs[i]), daemon=True)
                pump.start()
                pumps.append(pump)
            failed = self._wait(procs)
        finally:
            self._stop(procs)
            for pump in pumps:
                pump.join(timeout=5)
        if failed:
            detail = "\n".join(f"--- worker {i} ({logs[i]}) ---\n{logs[i].read_text()[-2000:]}" for i in failed)
            raise WorkersFailed(f"{len(failed)} of {n} workers failed or timed out:\n{detail}")

    def _wait(self, procs: list[subprocess.Popen[str]]) -> list[int]:
        """Until all exit, one fails or time runs out; the indices of the workers that did not succeed."""
        deadline = time.monotonic() + self.timeout
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return [i for i, p in enumerate(procs) if p.poll() != 0]

    def _stop(self, procs: list[subprocess.Popen[str]]) -> None:
        """SIGTERM every worker still running, SIGKILL what is left after the grace period."""
        running = [p for p in procs if p.poll() is None]
        for p in running:
            p.terminate()
        deadline = time.monotonic() + self.grace
        for p in running:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if running:
            log.warning("stopped %d worker(s) still running", len(running))


def _pump(index: int, stream: IO[str] | None, path: Path) -> None:
    """Copy a worker's output into its log file and into this process's log, line by line."""
    if stream is None:
        return
    prefix = logging.getLogger(f"{__name__}.worker{index}")
    with open(path, "w") as out:
        for line in stream:
            out.write(line)
            out.flush()
            prefix.info("[worker %d] %s", index, line.rstrip())


LAUNCHERS: dict[str, type] = {"in_process": InProcess, "local_processes": LocalProcesses}


def get_launcher(name: str) -> Launcher:
    try:
        return LAUNCHERS[name]()
    except KeyError:
        raise ValueError(f"unknown launcher {name!r}; known: {sorted(LAUNCHERS)}") from None
