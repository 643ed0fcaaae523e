"""``make run``'s window on ``airflow dags test``: the full log to a file, the progress to the terminal as it happens.

Why: ``airflow dags test`` logs hundreds of lines a run (Airflow's own, Spark's, TensorFlow's); ``make run`` used
to keep them in a file and print the task and epoch lines only when the run had ended, so for minutes nothing
moved and a user could not tell progress from a hang. This runs the command with its output piped through here
(unbuffered), writes every line to the log as it comes and prints, with the seconds since the start: each task
as it starts and how it ended, the feature store's Spark work, a long Spark operation's progress, the raw gate and
validation verdicts, and every training epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

_TASK_STARTS = re.compile(r"\[DAG TEST\] running task <TaskInstance: [\w.-]+?\.(?P<task>\w+) .*ti_id=(?P<ti>[\w-]+)>")
_TASK_STATE = re.compile(r"Task instance state updated .*new_state=(?P<state>\w+) .*ti_id=(?P<ti>[\w-]+)")
_EPOCH = re.compile(r"\b(?P<what>[a-z_]+ (?:select|final) epoch \d+/\d+ .*?)\s+\[")
_WORKER = re.compile(r"\[worker \d+\] ")  # a multi-worker training's line: which worker said it
# the stages' own one-line accounts of their engine work (retrainer's loggers), shown as they are logged
_STAGE_NEWS = re.compile(
    r"\[(?:info|warning)\s*\] (?P<what>(?:raw gate |feature store: computed|day checks:|row checks:|baseline |"
    r"evaluation:|registered |spark: ).*?)\s+\[retrainer\."
)


@dataclasses.dataclass
class Progress:
    """What the lines seen so far say: the task of each task instance id and when it started."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    tasks: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)

    def line(self, raw: str, now: float | None = None) -> str | None:
        """What to print for one log line, or None."""
        now = time.monotonic() if now is None else now
        stamp = f"[{now - self.started:5.0f}s]"
        if match := _TASK_STARTS.search(raw):
            self.tasks[match["ti"]] = (match["task"], now)
            return f"{stamp} task {match['task']} ..."
        if (match := _TASK_STATE.search(raw)) and match["ti"] in self.tasks:
            task, since = self.tasks[match["ti"]]
            return f"{stamp} task {task} {match['state']} ({now - since:.1f} s)"
        if match := _EPOCH.search(raw):
            worker = _WORKER.search(raw)
            return f"{stamp}   {worker[0] if worker else ''}{match['what']}"
        if match := _STAGE_NEWS.search(raw):
            return f"{stamp}   {match['what']}"
        return None


def follow(argv: Sequence[str], log_path: Path, out: TextIO = sys.stdout) -> int:
    """Run ``argv``; every output line into ``log_path``, its progress lines to ``out``; returns its exit code."""
    progress = Progress()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # a piped Python child otherwise holds its lines in a buffer
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env, bufsize=1
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for raw in proc.stdout:
            log.write(raw)
            log.flush()
            shown = progress.line(raw)
            if shown is not None:
                print(shown, file=out, flush=True)
    return proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrainer.devtools.dag_test_progress", description=__doc__)
    parser.add_argument("--log", required=True, type=Path, help="where every line of the command's output goes")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command (airflow dags test ...)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return follow(command, args.log)


if __name__ == "__main__":
    sys.exit(main())
