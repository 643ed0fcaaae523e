"""The ``retrainer`` CLI: every stage runs alone on a landed date, in order, from the run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retrainer.core.layout import RunLayout
from retrainer.runners.cli import main
from support import RUN_DATE

STAGES = ["land", "check-raw", "features", "validate", "train", "evaluate", "export", "register", "run", "summary"]


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "retrainer.runners.cli", "--help"], capture_output=True, text=True, check=True
    )
    for stage in STAGES:
        assert f"    {stage} " in out.stdout, stage


@pytest.mark.parametrize("command", STAGES)
def test_every_command_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: " in capsys.readouterr().out


def test_a_stage_without_its_upstream_says_which_stage_to_run(tmp_path: Path, capsys) -> None:
    assert main(["train", "--date", "2013-02-05", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "date=2013-02-05/run=manual-" in err
    assert "/validation.json not found: run the validate stage for this run first (same date, run id" in err


def test_bad_configuration_is_a_message_not_a_traceback(tmp_path: Path, capsys) -> None:
    assert main(["features", "--date", "2013-02-05", "--data-root", str(tmp_path), "--window-days", "3",
                 "--eval-days", "5"]) == 2  # fmt: skip
    assert "window_days (3) must be larger than eval_days (5)" in capsys.readouterr().err


def test_each_stage_runs_alone_from_the_cli(spark, landed: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "raw").symlink_to(landed / "raw")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the plumbing's tiny model (docs/testing.md): one member, 8 units, 1 epoch
    common = ["--date", RUN_DATE.isoformat(), "--data-root", str(root), "--window-days", "7", "--eval-days", "2",
              "--tracking-uri", tracking, "--epochs", "1", "--hidden-units", "8", "--part-files", "2",
              "--members", "joint", "--batch-size", "256"]  # fmt: skip
    results = {}
    for stage in ("check-raw", "features", "validate", "train", "evaluate", "export", "register"):
        capsys.readouterr()
        assert main([stage, *common]) == 0, stage
        results[stage] = json.loads(capsys.readouterr().out)
    assert results["validate"]["report"]["success"] is True
    (layout,) = RunLayout.runs_of(root, "flight_delay", RUN_DATE)  # every stage found the one run folder
    assert results["validate"]["features_dir"] == str(layout.features)
    assert results["train"]["history"][0]["epoch"] == 1
    assert results["evaluate"]["promote"] is True
    assert Path(results["export"]["saved_model_uri"]).is_dir()
    assert results["register"]["aliases"] == {"champion": "1", "challenger": "1"}
    assert main(["summary", *common]) == 0
    summary = capsys.readouterr().out
    assert "decision    PROMOTE (no champion yet)" in summary
    assert "aliases     challenger -> v1, champion -> v1" in summary


def test_missing_raw_partitions_are_listed_before_spark_starts(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "check-raw",
                "--date",
                "2013-02-05",
                "--data-root",
                str(tmp_path),
                "--window-days",
                "7",
                "--eval-days",
                "2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "missing raw partitions" in err and "flights: 2013-01-22, 2013-01-23" in err and "2013-02-04" in err


def test_the_version_and_the_exit_status_of_rejected_data(spark, landed: Path, tmp_path: Path, capsys) -> None:
    """`retrainer --version` names the installed package; data a gate rejects exits 3, not the 2 of a usage or
    configuration error, so a wrapper script can tell them apart."""
    import shutil
    from importlib.metadata import version

    from retrainer.core.layout import raw_partition

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"retrainer {version('retrainer')}"
    root = tmp_path / "data"
    shutil.copytree(landed / "raw", root / "raw")
    day = raw_partition(root, "flights", RUN_DATE.replace(day=2))
    rows = day.read_text().splitlines(keepends=True)
    day.write_text(rows[0].replace("dep_delay", "departure_delay") + "".join(rows[1:]))  # a renamed column
    args = ["check-raw", "--date", RUN_DATE.isoformat(), "--data-root", str(root), "--window-days", "7",
            "--eval-days", "2", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.startswith("retrainer check-raw: bad data: ") and "flights" in err and "dep_delay" in err, err
    assert main([*args, "--window-days", "2", "--eval-days", "5"]) == 2  # a configuration error: still 2
