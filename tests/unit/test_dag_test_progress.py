"""``make run``'s progress: the lines it picks from ``airflow dags test``'s output, and that it prints them while the
command still runs (the command waits for the test to have seen its first line before it goes on)."""

from __future__ import annotations

import io
import queue
import re
import sys
import threading
from pathlib import Path

from retrainer.devtools.dag_test_progress import Progress, follow

TI = "01a250ba-8924-7f3c-8dd4-aa9057361c6d"
LOG = [  # lines as Airflow 3.3's dags test and retrainer's loggers print them (from a make run log)
    f"2026-12-07T13:38:56.223732Z [info     ] [DAG TEST] running task <TaskInstance: flight_delay_retrain.check_raw "
    f"manual__2026-12-07T13:38:51.552967+00:00 [TaskInstanceState.SCHEDULED] ti_id={TI}> "
    "[airflow.sdk.definitions.dag] loc=dag.py:1504",
    "2026-12-07T13:39:12.0Z [info     ] raw gate passed: 70 landed files (70 scanned, 0 unchanged since checked), 78 "
    "checks; quarantined rows: none [retrainer.stages.check_raw] loc=check_raw.py:120",
    "2026-12-07T13:39:12.5Z [info     ] check_raw cost: 16.8 s wall, 4.2 s CPU, peak 599 MiB [retrainer.core.costs]",
    "2026-12-07T13:39:13.095118Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api."
    "routes.task_instances] correlation_id=01a250ba-dc3b loc=task_instances.py:485 new_state=success "
    f"rows_affected=1 ti_id={TI}",
    "2026-12-07T13:39:41.004542Z [info     ] warm_linear select epoch 1/30 loss=0.4318 train_auc=0.7822 "
    "val_auc=0.7377 3.2s 4770 ex/s [retrainer.training.loop] loc=phase.py:289",
    "2026-12-07T13:39:41.1Z [info     ] [worker 1] joint final epoch 3/13 loss=0.4 train_auc=0.7 0.1s 9 ex/s "
    "[retrainer.training.loop] loc=phase.py:289",
    "2026/12/07 13:39:29 INFO mlflow.store.db.utils: Creating initial MLflow database tables...",
    "2026-12-07T13:40:02.0Z [info     ] spark: operation 8e1f03aa running 21 s: 45/120 tasks of 3 stage(s) done, 2 "
    "running, 310 MiB read [retrainer.spark.progress] loc=progress.py:56",
]


def test_the_progress_names_each_task_its_end_the_stages_verdicts_and_every_epoch() -> None:
    progress = Progress(started=100.0)
    shown = [progress.line(line, now=100.0 + i * 10) for i, line in enumerate(LOG)]
    assert shown == [
        "[    0s] task check_raw ...",
        "[   10s]   raw gate passed: 70 landed files (70 scanned, 0 unchanged since checked), 78 checks; "
        "quarantined rows: none",
        None,  # the cost line: the task's end says it
        "[   30s] task check_raw success (30.0 s)",
        "[   40s]   warm_linear select epoch 1/30 loss=0.4318 train_auc=0.7822 val_auc=0.7377 3.2s 4770 ex/s",
        "[   50s]   [worker 1] joint final epoch 3/13 loss=0.4 train_auc=0.7 0.1s 9 ex/s",
        None,
        "[   70s]   spark: operation 8e1f03aa running 21 s: 45/120 tasks of 3 stage(s) done, 2 running, 310 MiB read",
    ]
    other = Progress(started=0.0)  # a state line of a task instance it never saw start is not guessed at
    assert other.line(LOG[3], now=1.0) is None


class _Lines(io.TextIOBase):
    """A terminal the test can wait on: each finished line into a queue."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self._partial = ""

    def write(self, text: str) -> int:
        *done, self._partial = (self._partial + text).split("\n")
        for line in done:
            self.lines.put(line)
        return len(text)


def test_progress_is_printed_while_the_command_runs_and_every_line_is_logged(tmp_path: Path) -> None:
    go_on = tmp_path / "go-on"
    child = (
        "import pathlib, sys, time\n"
        f"print({LOG[0]!r})\n"  # no flush: the follower must get it from an unbuffered child
        "deadline = time.time() + 60\n"
        f"while not pathlib.Path({str(go_on)!r}).exists() and time.time() < deadline: time.sleep(0.05)\n"
        f"print({LOG[3]!r})\n"
        "print('an error line', file=sys.stderr)\n"
        "sys.exit(0 if pathlib.Path(" + repr(str(go_on)) + ").exists() else 7)\n"
    )
    out, log = _Lines(), tmp_path / "logs" / "run.log"
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(code=follow([sys.executable, "-c", child], log, out)))
    thread.start()
    first = out.lines.get(timeout=60)  # printed before the command can end: it waits for go_on
    assert first.endswith("task check_raw ...")
    go_on.touch()
    thread.join(timeout=60)
    assert result["code"] == 0
    assert re.search(r"\] task check_raw success \(\d+\.\d s\)$", out.lines.get_nowait())
    assert log.read_text().splitlines() == [LOG[0], LOG[3], "an error line"]
