"""The feature table's row checks per stored day: cached by the day's rows, the same verdicts as Great
Expectations over the whole table, a failure naming day, column, check and values, and a store that changed
after the features refused."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrainer.core import atomic
from retrainer.core.layout import ValidationFiles
from retrainer.data import day_checks
from retrainer.data.feature_store import day_folder
from retrainer.data.gx_suites import Suite, run_suites
from retrainer.stages.check_raw import check_raw_days
from retrainer.stages.features import build_features
from retrainer.stages.validate import StoreChangedSinceFeatures, ValidationFailed, validate_features
from retrainer.workloads import get_workload
from support import small_config

WORKLOAD = get_workload("flight_delay")


def _store_days(cfg) -> dict[str, Path]:
    return {d.isoformat(): day_folder(cfg.engines.data_root, WORKLOAD, d) for d in cfg.window.days()}


def _rewrite_day(folder: Path, edit) -> None:
    """Replace a stored day's rows by ``edit(frame)``, as one part file."""
    parts = sorted(folder.glob("*.parquet"))
    table = pq.read_table(parts)
    frame = edit(table.to_pandas())
    for p in parts:
        p.unlink()
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), folder / "part-0.parquet")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, landed: Path) -> Path:
    """A private data root (its own feature store) for tests that break stored days."""
    root = tmp_path_factory.mktemp("day-checks") / "data"
    shutil.copytree(landed / "raw", root / "raw")
    return root


@pytest.fixture(scope="module")
def cfg(root: Path, session_dir: Path):
    return small_config(root, f"sqlite:///{session_dir / 'day-checks-mlflow.db'}")


def test_each_day_is_checked_once_then_reused_with_the_same_verdicts(spark, cfg) -> None:
    features = build_features(check_raw_days(cfg), cfg)
    days = _store_days(cfg)
    for folder in days.values():
        (folder / day_checks.CHECKS_FILE).unlink(missing_ok=True)
    first = validate_features(features, cfg).report
    assert (first.days_checked, first.days_reused) == (len(days), 0)
    assert all((folder / day_checks.CHECKS_FILE).exists() for folder in days.values())

    again = validate_features(build_features(check_raw_days(cfg), cfg), cfg).report
    assert (again.days_checked, again.days_reused) == (0, len(days))  # no day's rows were read again
    assert (again.success, again.evaluated, again.failed) == (first.success, first.evaluated, first.failed)
    assert again.by_construction == first.by_construction == 10

    # A day whose rows change is checked again, alone.
    changed = cfg.window.eval_start
    _rewrite_day(days[changed.isoformat()], lambda f: f.iloc[: len(f) - 1])
    checks = day_checks.check_days(days, WORKLOAD.contract, WORKLOAD.contract.expectations())
    assert checks.checked == [changed.isoformat()] and checks.reused == len(days) - 1

    # A record cut to nothing (a full disk) is no record: that day is checked again, nothing fails.
    (days[cfg.window.train_start.isoformat()] / day_checks.CHECKS_FILE).write_text("")
    checks = day_checks.check_days(days, WORKLOAD.contract, WORKLOAD.contract.expectations())
    assert checks.checked == [cfg.window.train_start.isoformat()]


def test_a_bad_value_in_a_stored_day_fails_naming_day_column_check_and_values(spark, cfg) -> None:
    day = cfg.window.train_start + dt.timedelta(days=2)
    folder = _store_days(cfg)[day.isoformat()]
    _rewrite_day(folder, lambda f: f.assign(carrier=["ZZ"] * 3 + list(f["carrier"][3:])))
    features = build_features(check_raw_days(cfg), cfg)  # the store's inputs did not change: the day is reused
    with pytest.raises(ValidationFailed) as err:
        validate_features(features, cfg)
    message = str(err.value)
    pattern = (
        rf"\[feature_table\] share of carrier values not in the set outside \[0, 0\] on "
        rf"\[{cfg.window.train_start}, {cfg.window.end}\): 0\.000\d+ \({day}: 3 of \d+, e\.g\. 'ZZ', 'ZZ', 'ZZ'\)"
    )
    assert re.search(pattern, message), message


def test_features_are_refused_when_the_store_changed_after_them(spark, cfg) -> None:
    day = cfg.window.eval_start - dt.timedelta(days=1)
    (_store_days(cfg)[day.isoformat()] / "_inputs.json").unlink()  # the next features run recomputes the day
    features = build_features(check_raw_days(cfg), cfg)
    _rewrite_day(_store_days(cfg)[day.isoformat()], lambda f: f.iloc[1:])  # then another run changes its rows
    with pytest.raises(StoreChangedSinceFeatures, match=f"rows of {day} are not the rows"):
        validate_features(features, cfg)


def test_window_verdicts_equal_great_expectations_over_the_whole_table(tmp_path: Path) -> None:
    """Counts per day, combined, decide every expectation as GX does over the table (``mostly`` included)."""
    contract = WORKLOAD.contract
    specs = contract.expectations()
    rng = pd.Series(range(300))
    frames = {}
    for i, day in enumerate(["2013-03-01", "2013-03-02", "2013-03-03"]):
        frame = pd.DataFrame({c.name: _values(c, rng) for c in contract.columns if c.name != "flight_date"})
        if i == 1:  # a few bad values on one day only
            frame.loc[:1, "carrier"] = "ZZ"
            frame.loc[:4, "distance"] = -1.0
            frame.loc[:2, "month"] = None
        if i == 2:
            frame.loc[:0, "temp"] = 500.0  # within the temp column's `mostly`, if it has one
        frames[day] = frame
        folder = tmp_path / f"flight_date={day}"
        folder.mkdir()
        frame.to_parquet(folder / "part-0.parquet", index=False)
    checks = day_checks.check_days({d: tmp_path / f"flight_date={d}" for d in frames}, contract, specs)
    window = day_checks.window_suite(checks, specs, "w")

    whole = pd.concat([f.assign(flight_date=d) for d, f in frames.items()], ignore_index=True)
    files = ValidationFiles(tmp_path / "out")
    verdicts = {}
    for name, suite in {
        "table": Suite("table", whole, specs),
        "window": Suite("window", window.frame, window.specs, labels=window.labels, row_key="window"),
    }.items():
        run_suites([suite], name, files, files)
        verdicts[name] = [r["success"] for r in atomic.read_json(files.results)[name]["results"]]
    assert verdicts["window"] == verdicts["table"]  # expectation by expectation, in the suite's order
    assert verdicts["table"].count(False) >= 3  # carrier, distance, month failed; the rest held


def _values(column, rng: pd.Series) -> list:
    """Valid values of a contract column: within its bounds and categories."""
    if column.categories is not None:
        return [column.categories[i % len(column.categories)] for i in rng]
    if column.regex is not None:
        return ["JFK"] * len(rng)
    low = column.min_value if column.min_value is not None else 0.0
    high = column.max_value if column.max_value is not None else low + 1.0
    return [float(low + (high - low) * (i % 10) / 10) if column.dtype == "float64" else int(low) for i in rng]
