"""Each stage's cost record: written whether the stage passes or fails, children's CPU counted, unreadable
records skipped, and the decorator finding the run's cost folder from the stage's last argument."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retrainer.core.costs import measured, read_costs, recorded

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"


def test_a_stage_that_passes_records_wall_cpu_of_its_children_and_peak(tmp_path: Path) -> None:
    with measured("train", lambda: tmp_path):
        subprocess.run([sys.executable, "-c", BURN], check=True)  # a waited child's CPU counts
    cost = read_costs(tmp_path)["train"]
    assert cost.ok and cost.cpu_s >= 0.3 and cost.wall_s >= cost.cpu_s * 0.5 and cost.peak_rss_mib > 10


def test_a_stage_that_fails_is_recorded_as_failed_and_its_error_kept(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad day"), measured("validate", lambda: tmp_path):
        raise ValueError("bad day")
    assert read_costs(tmp_path)["validate"].ok is False


def test_the_decorator_finds_the_run_in_the_last_argument_or_the_run_keyword(tmp_path: Path) -> None:
    @recorded("export", lambda run: tmp_path / run)
    def stage(result: str, run: str) -> str:
        return result.upper()

    assert stage("a", "r1") == "A" and stage("b", run="r2") == "B"
    assert read_costs(tmp_path / "r1")["export"].ok and read_costs(tmp_path / "r2")["export"].ok


def test_an_unreadable_record_is_skipped_not_fatal(tmp_path: Path) -> None:
    with measured("features", lambda: tmp_path):
        pass
    (tmp_path / "train.json").write_text("")  # a zero-length record left by a killed write
    (tmp_path / "evaluate.json").write_text(json.dumps({"stage": "evaluate"}))  # fields missing
    assert set(read_costs(tmp_path)) == {"features"}
