"""Run folders: one per run (run id and data-defining parameters), never shared by two runs of one date."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from retrainer.core.config import RunConfig
from retrainer.core.layout import MissingStageResult, RunLayout, run_folder_name

DAY = dt.date(2013, 6, 1)


def _layout(tmp_path, **values) -> RunLayout:
    return RunLayout.of(RunConfig.build(DAY, data_root=str(tmp_path), **values))


def test_two_runs_of_one_date_get_two_folders_and_a_retry_its_own(tmp_path) -> None:
    scheduled = _layout(tmp_path, run_id="scheduled__2013-06-01T00:00:00+00:00")
    from_ui = _layout(tmp_path, run_id="manual__2026-12-06T01:02:03.456789+00:00")
    assert scheduled.root != from_ui.root and scheduled.root.parent == from_ui.root.parent
    assert scheduled.root.parent == tmp_path / "runs" / "flight_delay" / "date=2013-06-01"
    assert _layout(tmp_path, run_id="scheduled__2013-06-01T00:00:00+00:00") == scheduled  # a retry: same folder
    assert scheduled.root.name.startswith("run=scheduled__2013-06-01T00-00-00-00-00-")


def test_the_data_defining_parameters_key_the_folder_and_model_parameters_do_not(tmp_path) -> None:
    base = _layout(tmp_path)
    assert _layout(tmp_path, eval_days=3) != base and _layout(tmp_path, window_days=14) != base
    assert _layout(tmp_path, validation_days=2) != base and _layout(tmp_path, part_files=2) != base
    # model parameters keep their checkpoints apart by the training run key; register refuses a mix-up
    assert _layout(tmp_path, epochs=3, hidden_units=8, seed=7, min_gain=0.01) == base


def test_run_ids_that_read_alike_once_made_safe_still_differ() -> None:
    a, b = run_folder_name("manual__a:b", {}), run_folder_name("manual__a+b", {})
    assert a != b and a.split("-")[0] == b.split("-")[0] == "run=manual__a"
    odd = run_folder_name("../../etc/passwd", {})
    assert "/" not in odd and ".." not in odd
    assert len(run_folder_name("x" * 500, {})) < 90


def test_the_runs_of_a_date_newest_last(tmp_path) -> None:
    with pytest.raises(MissingStageResult, match="no run of flight_delay for 2013-06-01"):
        RunLayout.latest(tmp_path, "flight_delay", DAY)
    first, second = _layout(tmp_path, run_id="one"), _layout(tmp_path, run_id="two")
    for layout in (second, first):
        layout.root.mkdir(parents=True)
    past = time.time() - 60
    os.utime(second.root, (past, past))
    assert RunLayout.runs_of(tmp_path, "flight_delay", DAY) == [second, first]
    assert RunLayout.latest(tmp_path, "flight_delay", DAY) == first
