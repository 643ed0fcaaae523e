"""Progress of long Spark work, in the task's log: Spark Connect's own progress reports, a line at most every
``every`` seconds for an operation that runs longer than ``after`` seconds, and its end.

Why: a cold full-year feature build or a backfill's raw gate runs a Spark job for minutes, and the task's log said
nothing between its start and its result, so an operator could not tell a long job from a hung one. The Spark
Connect server streams each operation's stages (tasks done of total, bytes read) to the client while it runs
(pyspark's ``SparkSession.registerProgressHandler``); this turns them into log lines. Short operations, nearly all
of a warm daily run, log nothing. The end line carries the last report's figures, not a final count: the server
reports every few seconds and pyspark ends the operation without a report of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Operation:
    started: float
    logged: float | None = None  # when its last line was logged


class SparkProgressLog:
    """A Spark Connect progress handler (called with each operation's stages as the server reports them)."""

    def __init__(
        self, every: float = 10.0, after: float = 10.0, clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:  # fmt: skip
        self.every, self.after, self.clock, self.log = every, after, clock, logger
        self._operations: dict[str, _Operation] = {}

    def __call__(self, stages: Iterable[Any] | None, inflight_tasks: int, operation_id: str | None, done: bool) -> None:
        now = self.clock()
        key = operation_id or "?"
        op = self._operations.setdefault(key, _Operation(now))
        stages = list(stages or [])
        elapsed = now - op.started
        if done:
            self._operations.pop(key, None)
            if op.logged is not None:  # only an operation that was reported as running gets an end line
                # pyspark calls this when the stream ends, failed or not: the figures are the last report's (above)
                self.log.info("spark: operation %s ended after %.0f s (last report: %s)", key[:8], elapsed,
                              _account(stages, None))  # fmt: skip
            return
        if elapsed < self.after or (op.logged is not None and now - op.logged < self.every):
            return
        op.logged = now
        self.log.info("spark: operation %s running %.0f s: %s", key[:8], elapsed, _account(stages, inflight_tasks))


def _account(stages: list[Any], running: int | None) -> str:
    """``45/120 tasks of 3 stage(s) done, 2 running, 310 MiB read``."""
    total = sum(s.num_tasks for s in stages)
    completed = sum(s.num_completed_tasks for s in stages)
    read = sum(s.num_bytes_read for s in stages) / 2**20
    text = f"{completed}/{total} tasks of {len(stages)} stage(s) done"
    if running:
        text += f", {running} running"
    return f"{text}, {read:,.0f} MiB read"


def watch(session: Any) -> None:
    """Log ``session``'s long operations (once per session: pyspark keeps the handlers on its client)."""
    if getattr(session, "_retrainer_progress", None) is None:
        handler = SparkProgressLog()
        session.registerProgressHandler(handler)
        session._retrainer_progress = handler
