"""The pipeline: one function per stage over the typed results of the stages before it (orchestration only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from retrainer.core.costs import recorded

F = TypeVar("F", bound=Callable[..., Any])


def _cost_folder(run: Any) -> Path:
    from retrainer.workloads import RunContext

    return RunContext.of(run).layout.costs


def costed(stage: str) -> Callable[[F], F]:
    """Record the stage's wall and CPU seconds and peak memory in its run's cost folder, pass or fail."""
    return recorded(stage, _cost_folder)
