"""Long Spark operations' progress lines from Spark Connect's progress reports (the real server's reports:
tests/stages/test_spark_connect_server.py)."""

from __future__ import annotations

import logging

from pyspark.sql.connect.shell.progress import StageInfo

from retrainer.spark.progress import SparkProgressLog


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _stages(done: int) -> list[StageInfo]:
    return [
        StageInfo(stage_id=0, num_tasks=8, num_completed_tasks=8, num_bytes_read=2**20, done=True),
        StageInfo(stage_id=1, num_tasks=4, num_completed_tasks=done, num_bytes_read=3 * 2**20, done=False),
    ]


def test_an_operation_is_reported_only_once_long_then_at_most_every_interval_and_at_its_end(caplog) -> None:
    clock = _Clock()
    handler = SparkProgressLog(every=10, after=5, clock=clock)
    with caplog.at_level(logging.INFO, logger="retrainer.spark.progress"):
        for t, done in [(0, 0), (4, 1), (5, 1), (9, 2), (15, 3), (16, 3)]:
            clock.now = t
            handler(stages=_stages(done), inflight_tasks=1, operation_id="8e1f03aa-77", done=False)
        clock.now = 17
        handler(stages=_stages(4), inflight_tasks=0, operation_id="8e1f03aa-77", done=True)
    assert [r.getMessage() for r in caplog.records] == [
        "spark: operation 8e1f03aa running 5 s: 9/12 tasks of 2 stage(s) done, 1 running, 4 MiB read",
        "spark: operation 8e1f03aa running 15 s: 11/12 tasks of 2 stage(s) done, 1 running, 4 MiB read",
        "spark: operation 8e1f03aa ended after 17 s (last report: 12/12 tasks of 2 stage(s) done, 4 MiB read)",
    ]


def test_a_short_operation_logs_nothing_and_operations_are_told_apart(caplog) -> None:
    clock = _Clock()
    handler = SparkProgressLog(every=10, after=5, clock=clock)
    with caplog.at_level(logging.INFO, logger="retrainer.spark.progress"):
        handler(stages=_stages(0), inflight_tasks=2, operation_id="short", done=False)
        handler(stages=_stages(1), inflight_tasks=2, operation_id="long", done=False)
        clock.now = 3
        handler(stages=_stages(4), inflight_tasks=0, operation_id="short", done=True)  # 3 s: nothing
        clock.now = 6
        handler(stages=_stages(2), inflight_tasks=2, operation_id="long", done=False)
    assert [r.getMessage() for r in caplog.records] == [
        "spark: operation long running 6 s: 10/12 tasks of 2 stage(s) done, 2 running, 4 MiB read"
    ]
