"""The ``local_processes`` launcher: ``engines.num_workers`` worker processes on this machine.

Each worker is ``python -m <entry point> <argv>`` with its own TF_CONFIG on free loopback ports
(MultiWorkerMirroredStrategy). Each worker's output streams into this process's log with a
``[worker i]`` prefix (and into ``worker_logs/``); every worker is stopped if one fails, the time limit
passes, or this process is interrupted or dies. A lock in the run folder keeps a second attempt from
starting workers beside a running group, and workers an earlier attempt left behind are stopped first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import IO

from retrainer.core.config import RunConfig
from retrainer.core.errors import WorkersFailed
from retrainer.core.layout import RunLayout
from retrainer.core.processes import dies_with_parent, free_ports
from retrainer.training.strategy import tf_config

log = logging.getLogger(__name__)


class AlreadyTraining(RuntimeError):
    """Another attempt is training this run right now: starting a second worker group would corrupt both."""


WORKERS_FILE = "workers.json"  # pids of the group this run's launcher started last


def _alive(pid: int, command: list[str]) -> bool:
    """The pid still runs this command (not a new process that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [c.decode(errors="replace") for c in cmdline if c][: len(command)] == command


def stop_leftover_workers(log_dir: Path) -> list[int]:
    """SIGKILL workers an earlier attempt left running (its launcher was killed before it could stop them)."""
    record = log_dir / WORKERS_FILE
    if not record.exists():
        return []
    left = json.loads(record.read_text())
    stopped = [pid for pid in left["pids"] if _alive(pid, left["command"])]
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if stopped:
        log.warning("stopped %d worker(s) an earlier attempt left running: %s", len(stopped), stopped)
    record.unlink()
    return stopped


@contextlib.contextmanager
def training_lock(log_dir: Path) -> Generator[None, None, None]:
    """Held while a worker group of this run trains; a second launch fails at once instead of waiting."""
    import fcntl

    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "launcher.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise AlreadyTraining(
                f"another attempt (pid {fh.read().strip() or '?'}) is training this run ({log_dir}): "
                "not starting a second worker group"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield


class LocalProcesses:
    def __init__(self, timeout: float = 4 * 3600, grace: float = 10.0) -> None:
        self.timeout, self.grace = timeout, grace

    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        log_dir = RunLayout.of(cfg).worker_logs
        with training_lock(log_dir):
            stop_leftover_workers(log_dir)
            self._launch(entrypoint, cfg, log_dir)

    def _launch(self, entrypoint: str, cfg: RunConfig, log_dir: Path) -> None:
        n = cfg.engines.num_workers
        workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
        command = [sys.executable, "-m", entrypoint, *cfg.to_argv()]
        procs: list[subprocess.Popen[str]] = []
        pumps: list[threading.Thread] = []
        logs = [log_dir / f"worker-{i}.log" for i in range(n)]
        log.info("starting %d worker(s) of %s on %s (logs also in %s)", n, entrypoint, workers, log_dir)
        try:
            for i in range(n):
                env = dict(os.environ) | cfg.secret_env()  # the secret parameters travel here, not in argv
                if n > 1:
                    env["TF_CONFIG"] = json.dumps(tf_config(workers, i))
                    env["CUDA_VISIBLE_DEVICES"] = ""  # local workers share one machine: CPU only
                proc = subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                    preexec_fn=dies_with_parent(signal.SIGKILL),
                )  # fmt: skip
                procs.append(proc)
                (log_dir / WORKERS_FILE).write_text(json.dumps({"command": command, "pids": [p.pid for p in procs]}))
                pump = threading.Thread(target=_pump, args=(i, proc.stdout, logs[i]), daemon=True)
                pump.start()
                pumps.append(pump)
            failed = self._wait(procs)
        finally:
            self._stop(procs)
            for pump in pumps:
                pump.join(timeout=5)
            (log_dir / WORKERS_FILE).unlink(missing_ok=True)
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
