"""What an operator is told, and where it is kept: a task that failed for good, a champion that changed, data
that is late, a champion that is stale.

An alert is written to the log and as one JSON file under ``<data_root>/_alerts/`` (one file per
event and task try, written atomically: a repeated callback replaces its own file instead of adding
a second). Airflow's notifier API delivers it (``retrainer_plugins.notifiers``); SMTP and Slack are
extra channels chosen by configuration, not by code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from pathlib import Path
from typing import Any

from retrainer.core import atomic

log = logging.getLogger(__name__)

TASK_FAILED = "task_failed"
CHAMPION_CHANGED = "champion_changed"
DATA_LATE = "data_late"  # freshness (retrainer.runners.freshness): raw days not landed by the deadline
CHAMPION_STALE = "champion_stale"  # freshness: no promotion for longer than the deployment allows
EVENTS = (TASK_FAILED, CHAMPION_CHANGED, DATA_LATE, CHAMPION_STALE)
MESSAGE_KEY = "retrainer_alert"  # a freshness alert's message, in the context its notifiers render


@dataclasses.dataclass(frozen=True)
class Alert:
    event: str
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    run_date: dt.date | None
    message: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown alert event {self.event!r}; known: {EVENTS}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["run_date"] = self.run_date.isoformat() if self.run_date else None
        return out

    @property
    def file_name(self) -> str:
        day = self.run_date.isoformat() if self.run_date else "undated"
        parts = (day, self.event, self.dag_id, self.run_id, self.task_id, f"try{self.try_number}")
        return ".".join(re.sub(r"[^A-Za-z0-9_-]+", "_", p) for p in parts) + ".json"


def alerts_folder(data_root: str | Path) -> Path:
    return Path(data_root) / "_alerts"


def record(alert: Alert, data_root: str | Path) -> Path:
    """Log the alert and keep it as JSON; returns the file."""
    path = atomic.write_json(alerts_folder(data_root) / alert.file_name, alert.to_dict())
    level = logging.ERROR if alert.event == TASK_FAILED else logging.WARNING
    log.log(level, "retrainer alert %s: %s (%s)", alert.event, alert.message, path)
    return path


def recorded(data_root: str | Path, event: str | None = None) -> list[dict[str, Any]]:
    """Every alert kept under the data root, oldest file name first (for the tests and for operators)."""
    folder = alerts_folder(data_root)
    found = [atomic.read_json(p) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
    return [a for a in found if event is None or a["event"] == event]
