"""Seconds per task of one `make run` (an `airflow dags test` log): for before/after comparisons of a change.

python bench/task_times.py .airflow/logs/dags-test-flight_delay-2013-06-01.log [another.log ...]
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

START = re.compile(r"^(\S+) .*\[DAG TEST\] running task <TaskInstance: [\w]+\.(\w+) ")
END = re.compile(r"^(\S+) .*Task instance state updated.*new_state=(success|failed)")


def task_seconds(log: Path) -> dict[str, float]:
    """Each task's seconds from its start line to the next state update (dags test runs one task at a time)."""
    out: dict[str, float] = {}
    current: tuple[str, dt.datetime] | None = None
    for line in log.read_text(errors="replace").splitlines():
        if m := START.match(line):
            current = (m.group(2), dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")))
        elif (m := END.match(line)) and current is not None:
            ended = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
            out[current[0]] = round((ended - current[1]).total_seconds(), 1)
            current = None
    return out


def main(paths: list[str]) -> None:
    runs = [task_seconds(Path(p)) for p in paths]
    tasks = list(dict.fromkeys(t for r in runs for t in r))
    print("| task | " + " | ".join(f"run {i + 1} s" for i in range(len(runs))) + " |")
    print("|---|" + "---:|" * len(runs))
    for t in tasks + ["total"]:
        cells = [f"{sum(r.values()):.1f}" if t == "total" else f"{r.get(t, float('nan')):.1f}" for r in runs]
        print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
