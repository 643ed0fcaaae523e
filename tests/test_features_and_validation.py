"""Spark features and Great Expectations validation on a few real landed days."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from conftest import LAND_END, LAND_START, small_config
from retrainer.calendar import days_between
from retrainer.fingerprint import folder_fingerprint, parquet_parts
from retrainer.layout import FeatureFiles, RunLayout, raw_partition
from retrainer.results import FeaturesResult, ValidationReport, ValidationResult
from retrainer.stages.features import build_features
from retrainer.stages.validate import ValidationFailed, validate_features


@pytest.fixture(scope="module")
def cfg(landed: Path, session_dir: Path):
    return small_config(landed, f"sqlite:///{session_dir / 'features-mlflow.db'}")


@pytest.fixture(scope="module")
def built(spark, cfg) -> FeaturesResult:
    return build_features(cfg)


def _files(result: FeaturesResult) -> FeatureFiles:
    return FeatureFiles(Path(result.folder))


def _raw_flights(root: Path, day: dt.date) -> list[dict[str, str]]:
    with open(raw_partition(root, "flights", day), newline="") as fh:
        return list(csv.DictReader(fh))


def test_splits_hold_every_labelled_flight_of_their_days(built: FeaturesResult, cfg, landed: Path) -> None:
    w = cfg.window
    for split, (start, end) in {"train": (w.train_start, w.eval_start), "eval": (w.eval_start, w.end)}.items():
        raw = [r for d in days_between(start, end) for r in _raw_flights(landed, d)]
        labelled = [r for r in raw if r["arr_delay"] != "NA"]
        table = ds.dataset(str(getattr(_files(built), split))).to_table()
        assert table.num_rows == len(labelled) == built.rows[split]
        assert built.excluded_no_label[split] == len(raw) - len(labelled) > 0
        dates = table.column("flight_date").to_pylist()
        assert min(dates) == start and max(dates) == end - dt.timedelta(days=1)
        late = sum(float(r["arr_delay"]) > 15 for r in labelled)
        assert sum(table.column("is_late").to_pylist()) == late
    assert len(parquet_parts(_files(built).train)) == cfg.tuning.part_files


def test_lagged_late_rate_uses_only_the_seven_previous_days(built: FeaturesResult, cfg, landed: Path) -> None:
    day = cfg.window.eval_start
    history = [
        r
        for d in days_between(day - dt.timedelta(days=7), day)
        for r in _raw_flights(landed, d)
        if r["carrier"] == "UA" and r["arr_delay"] != "NA"
    ]
    expected = sum(float(r["arr_delay"]) > 15 for r in history) / len(history)
    table = ds.dataset(str(_files(built).eval)).to_table().to_pylist()
    got = {r["carrier_late_rate_7d"] for r in table if r["carrier"] == "UA" and r["flight_date"] == day}
    assert len(got) == 1
    assert got.pop() == pytest.approx(expected)


def test_weather_and_planes_are_joined(built: FeaturesResult) -> None:
    rows = ds.dataset(str(_files(built).train)).to_table().to_pylist()
    with_temp = sum(r["temp"] is not None for r in rows) / len(rows)
    with_seats = sum(r["seats"] is not None for r in rows) / len(rows)
    assert with_temp > 0.95
    assert 0.5 < with_seats < 1.0  # some tail numbers are not in planes.csv: null, imputed by the model


def test_statistics_and_vocabularies_come_from_the_training_split(built: FeaturesResult) -> None:
    stats = json.loads(_files(built).stats.read_text())
    train = ds.dataset(str(_files(built).train)).to_table()
    assert set(stats["vocabulary"]["dest"]) == set(train.column("dest").to_pylist())
    distances = train.column("distance").to_pylist()
    assert stats["numeric"]["distance"]["mean"] == pytest.approx(sum(distances) / len(distances))
    assert stats["rows"] == train.num_rows
    late = train.column("is_late").to_pylist()
    assert stats["label"]["mean"] == pytest.approx(sum(late) / len(late))


def test_rebuilding_a_date_replaces_its_features(spark, built: FeaturesResult, cfg) -> None:
    first = folder_fingerprint(_files(built).train)
    again = build_features(cfg)
    assert folder_fingerprint(_files(again).train) == first == again.train_fingerprint
    assert again.rows == built.rows
    assert len(parquet_parts(_files(again).train)) == cfg.tuning.part_files
    assert RunLayout.of(cfg).load(FeaturesResult) == again
    leftovers = [p.name for p in RunLayout.of(cfg).root.glob(".*")]
    assert leftovers == []


def test_valid_features_pass_and_are_promoted(spark, cfg) -> None:
    validated = validate_features(build_features(cfg), cfg)
    layout = RunLayout.of(cfg)
    assert validated.report.success and validated.report.failed == []
    assert validated.files == FeatureFiles(layout.features)
    assert not layout.features_pending.exists()
    assert layout.load(ValidationResult) == validated  # what train's workers will read
    assert Path(validated.report.data_docs_uri.removeprefix("file://").replace("%3D", "=")).exists()
    assert validated.report.evaluated["feature_table"] >= 60


@pytest.fixture
def corrupt_root(tmp_path: Path, landed: Path) -> Path:
    """A private copy of the landed data, for tests that break it."""
    root = tmp_path / "data"
    shutil.copytree(landed / "raw", root / "raw")
    return root


def _rewrite(path: Path, fn) -> None:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(fn(rows))


def test_a_dropped_column_fails_validation_naming_column_and_day(spark, cfg, corrupt_root: Path) -> None:
    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    good = validate_features(build_features(bad_cfg), bad_cfg)  # a good run for this date first
    day = bad_cfg.window.eval_start
    path = raw_partition(corrupt_root, "flights", day)
    _rewrite(path, lambda rows: [[v for i, v in enumerate(r) if i != rows[0].index("carrier")] for r in rows])

    with pytest.raises(ValidationFailed) as err:
        validate_features(build_features(bad_cfg), bad_cfg)
    message = str(err.value)
    assert f"raw flights partitions lack column 'carrier' on {day}" in message
    assert "expect_column_values_to_not_be_null on column 'carrier'" in message
    layout = RunLayout.of(bad_cfg)
    # the earlier validated features are untouched; the bad ones are kept aside for inspection
    assert folder_fingerprint(FeatureFiles(layout.features).train) == good.features.train_fingerprint
    assert layout.features_rejected.exists() and not layout.features_pending.exists()
    assert layout.load(ValidationReport).success is False
    assert layout.load_optional(ValidationResult) is None  # nothing left that says "validated" for this date


def test_out_of_contract_values_fail_naming_the_expectation(spark, cfg, corrupt_root: Path) -> None:
    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    path = raw_partition(corrupt_root, "flights", bad_cfg.window.eval_start)

    def break_origin(rows: list[list[str]]) -> list[list[str]]:
        i = rows[0].index("origin")
        return [rows[0]] + [r[:i] + ["XXX"] + r[i + 1 :] for r in rows[1:]]

    _rewrite(path, break_origin)
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_in_set on column 'origin'.*XXX"):
        validate_features(build_features(bad_cfg), bad_cfg)


def test_a_truncated_day_fails_the_rows_per_day_check_naming_the_day(spark, cfg, corrupt_root: Path) -> None:
    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    day = bad_cfg.window.train_start + dt.timedelta(days=1)
    _rewrite(
        raw_partition(corrupt_root, "flights", day), lambda rows: rows[:51]
    )  # header + 50 flights, all of which arrived
    with pytest.raises(ValidationFailed, match=rf"rows per day outside \[200, 1500\] on {day} \(50 rows\)"):
        validate_features(build_features(bad_cfg), bad_cfg)


def test_landed_range_covers_the_test_run(cfg) -> None:
    assert LAND_START <= cfg.window.train_start - dt.timedelta(days=7) and cfg.window.end <= LAND_END


# --- encoding and row-date problems: normalised, or named as bad data (never an engine crash) ----
def _bytes_rewrite(path: Path, fn) -> None:
    path.write_bytes(fn(path.read_bytes()))


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="utf8-bom"),
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n"), id="bom-and-crlf"),
    ],
)
def test_a_bom_or_crlf_file_is_read_like_a_clean_one(spark, cfg, corrupt_root: Path, encode) -> None:
    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    clean = build_features(bad_cfg)
    for source in ("flights", "weather"):
        _bytes_rewrite(raw_partition(corrupt_root, source, bad_cfg.window.eval_start), encode)
    again = validate_features(build_features(bad_cfg), bad_cfg)  # no "lacks column 'year'", no shifted values
    assert again.features.rows == clean.rows
    assert again.features.train_fingerprint == clean.train_fingerprint


def test_a_duplicated_header_name_is_bad_data_naming_file_and_column(spark, cfg, corrupt_root: Path) -> None:
    from retrainer.errors import BadData

    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    path = raw_partition(corrupt_root, "flights", bad_cfg.window.train_start)
    _rewrite(path, lambda rows: [[("origin" if v == "dest" else v) for v in rows[0]], *rows[1:]])
    with pytest.raises(BadData, match=rf"{re.escape(str(path))}: duplicate column name\(s\) \['origin'\]"):
        build_features(bad_cfg)
    assert RunLayout.of(bad_cfg).load_optional(FeaturesResult) is None  # no earlier build reported as this one


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [("month", "13", "dated invalid"), ("day", "1", "dated 2013-0")],
    ids=["impossible-date", "row-from-another-day"],
)
def test_rows_without_a_valid_date_of_their_partition_are_named(
    spark, cfg, corrupt_root: Path, column: str, value: str, expected: str
) -> None:
    from retrainer.errors import BadData

    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    day = bad_cfg.window.eval_start
    path = raw_partition(corrupt_root, "flights", day)

    def break_three_rows(rows: list[list[str]]) -> list[list[str]]:
        i = rows[0].index(column)
        return [rows[0]] + [r[:i] + [value] + r[i + 1 :] if n < 3 else r for n, r in enumerate(rows[1:])]

    _rewrite(path, break_three_rows)
    with pytest.raises(BadData) as err:
        build_features(bad_cfg)
    message = str(err.value)
    assert "(year, month, day) is not a valid date or not their partition's day" in message
    assert f"date={day.isoformat()}/flights.csv: 3 row(s), e.g. {expected}" in message
