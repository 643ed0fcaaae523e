"""What each stage of a run cost: wall and CPU seconds and peak memory, kept in the run's folder.

Why: "why was last night's run slow, and which stage?" is asked of a run, not of a benchmark. Every stage
function is wrapped by :func:`recorded`: it writes ``<stage>.json`` in the run's cost folder (``cost/``), whether the
stage passed or failed (a retry replaces it). ``register`` puts the costs of the stages before it on the
registered model version, and the summary prints them.

What is counted: the wall time of the stage; the CPU seconds of the process and of the children it
waited for (training workers, the fresh-process check, spark-submit); the peak resident memory of the
process and of its largest waited child, as the kernel reports them (``getrusage``: the peak of the process's
life so far, so under ``retrainer run``, where every stage shares one process, a later stage shows at
least the earlier stages' peak). A shared server's work (the Spark Connect server, MLflow) is not the
task's and is not counted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import resource
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from retrainer.core import atomic

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
# The names stages record their costs under, in pipeline order (the DAG's task ids): what readers sort by.
STAGES = ("check_raw", "features", "validate", "train", "evaluate", "export", "register")


@dataclasses.dataclass(frozen=True)
class StageCost:
    stage: str
    ok: bool  # the stage returned (False: it raised)
    started_at: str  # UTC, ISO 8601
    wall_s: float
    cpu_s: float  # user + system, this process and the children it waited for
    peak_rss_mib: float  # the largest of this process's and its children's peak resident memory


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_mib() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return max(own.ru_maxrss, children.ru_maxrss) / 1024  # Linux reports KiB


@contextmanager
def measured(stage: str, folder: Callable[[], Path]) -> Generator[None, None, None]:
    """Measure the block and write its :class:`StageCost` into the cost folder ``folder()`` (asked at the end);
    a failure to write is logged, never raised over the stage's outcome."""
    started, wall, cpu, ok = dt.datetime.now(dt.UTC), time.perf_counter(), _cpu(), False
    try:
        yield
        ok = True
    finally:
        cost = StageCost(
            stage=stage, ok=ok, started_at=started.isoformat(timespec="seconds"),
            wall_s=round(time.perf_counter() - wall, 3), cpu_s=round(_cpu() - cpu, 3),
            peak_rss_mib=round(_peak_mib(), 1),
        )  # fmt: skip
        try:
            target = folder() / f"{stage}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(target, dataclasses.asdict(cost))
        except OSError as exc:
            log.warning("cost of %s not recorded: %s", stage, exc)
        log.info("%s cost: %.1f s wall, %.1f s CPU, peak %.0f MiB", stage, cost.wall_s, cost.cpu_s, cost.peak_rss_mib)


def recorded(stage: str, cost_folder: Callable[[Any], Path]) -> Callable[[F], F]:
    """Decorate a stage function whose last argument is the run (``cost_folder`` maps it to its cost folder)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def stage_fn(*args: Any, **kwargs: Any) -> Any:
            run = kwargs["run"] if "run" in kwargs else args[-1]
            with measured(stage, lambda: cost_folder(run)):
                return fn(*args, **kwargs)

        return stage_fn  # type: ignore[return-value]

    return wrap


def read_costs(folder: Path) -> dict[str, StageCost]:
    """The recorded cost of each stage of a run, by stage, from its cost folder (an unreadable record is
    skipped with a warning: costs are information, never a gate)."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            cost = StageCost(**atomic.read_json(path))
        except (OSError, TypeError, ValueError) as exc:
            log.warning("cost record %s unreadable: %s", path, exc)
            continue
        out[cost.stage] = cost
    return out
