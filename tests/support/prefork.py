"""Stages run as a Celery worker runs them: each in a process of its own, forked from one that preloaded the
tasks' libraries.

A Celery worker (and a LocalExecutor worker) imports TensorFlow, Great Expectations, MLflow and the rest once
(:mod:`retrainer.runners.preload`) and forks a process per task; the tests that kill a stage and retry it used
to start a fresh interpreter per attempt instead, paying 8-15 s of imports each (the kill matrix alone starts
21). Here the standard library's fork server plays the worker: it imports :data:`~retrainer.runners.preload.MODULES`
once per test process, and every attempt is a fork of it, with its own environment, its own output file and
its own pid, so a SIGKILL kills that attempt alone, exactly as it would kill a Celery pool process.

The attempt runs a script (``-c``) or the CLI module (``-m``) as ``__main__``, like ``python`` would; its exit
status is the process's (``-9`` when killed). What a fresh interpreter does and a fork does not (``atexit``
handlers) no stage relies on: a task forked by a worker does not run them either.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

from retrainer.runners.preload import MODULES

_CONTEXT: multiprocessing.context.ForkServerContext | None = None


def _context() -> multiprocessing.context.ForkServerContext:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(list(MODULES))
    return _CONTEXT


def _attempt(kind: str, target: str, args: list[str], env: dict[str, str], output: str) -> None:
    """The forked attempt: the caller's environment and arguments, stdout and stderr into ``output``."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # emptied by start() before the fork
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if kind == "-c":
        sys.argv = ["-c", *args]
        exec(compile(target, "<attempt>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)


@dataclass
class Attempt:
    """A running or finished attempt; ``returncode`` as :class:`subprocess.Popen` reports it."""

    process: multiprocessing.process.BaseProcess
    output_path: Path

    def wait(self, timeout: float) -> int:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"attempt still running after {timeout} s:\n{self.output[-3000:]}")
        return self.returncode

    @property
    def returncode(self) -> int:
        code = self.process.exitcode
        assert code is not None, "the attempt has not ended"
        return code

    @property
    def output(self) -> str:
        """What it printed, stdout and stderr interleaved as a worker's log has them."""
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""


def start(kind: str, target: str, args: list[str], env: dict[str, str], output: Path) -> Attempt:
    """Fork an attempt: ``kind`` ``-c`` runs the script ``target``, ``-m`` the module ``target`` (as ``python``
    would, with ``args`` as ``sys.argv[1:]``)."""
    if kind not in ("-c", "-m"):
        raise ValueError(f"kind must be -c or -m, not {kind!r}")
    # The output file exists (empty) when this returns, as a Popen's redirected log would: a caller polling it
    # must not race the fork server to its creation (it lost once under load: FileNotFoundError).
    output.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    process = _context().Process(target=_attempt, args=(kind, target, list(args), dict(env), str(output)))
    process.start()
    return Attempt(process, output)


def run(kind: str, target: str, args: list[str], env: dict[str, str], output: Path, timeout: float) -> Attempt:
    """:func:`start`, then wait for it to end."""
    attempt = start(kind, target, args, env, output)
    attempt.wait(timeout)
    return attempt
