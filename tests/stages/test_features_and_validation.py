"""Spark features and Great Expectations validation on a few real landed days."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from retrainer.core.feature_files import FeatureFiles
from retrainer.core.fingerprint import folder_fingerprint, parquet_parts
from retrainer.core.layout import RunLayout, raw_dim, raw_partition
from retrainer.core.results import FeaturesResult, GateReport, ValidationResult
from retrainer.core.run_window import days_between
from retrainer.stages.check_raw import check_raw_days
from retrainer.stages.features import build_features
from retrainer.stages.validate import ValidationFailed, validate_features
from support import LAND_END, LAND_START, arrive_later, small_config


@pytest.fixture(scope="module")
def cfg(landed: Path, session_dir: Path):
    return small_config(landed, f"sqlite:///{session_dir / 'features-mlflow.db'}")


def features_for(cfg) -> FeaturesResult:
    """The raw gate, then the features: the only way features are built."""
    return build_features(check_raw_days(cfg), cfg)


@pytest.fixture(scope="module")
def built(spark, cfg) -> FeaturesResult:
    return features_for(cfg)


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
    # The order is the lookup layers' index order: by count, ties by the value itself (numerically for the
    # integer columns, where text order would put 10 before 2), counted here without Spark.
    for column in ("sched_dep_hour", "carrier", "dest"):
        counts = Counter(v for v in train.column(column).to_pylist() if v is not None)
        assert stats["vocabulary"][column] == sorted(counts, key=lambda v: (-counts[v], v)), column
    assert all(isinstance(v, int) for v in stats["vocabulary"]["sched_dep_hour"])
    # The drift profile's bins are the split's deciles (Spark's percentile_approx, computed with the moments).
    edges = json.loads(_files(built).profile.read_text())["numeric"]["distance"]["edges"]
    assert edges == sorted(edges) and len(edges) > 3
    below = [sum(d < e for d in distances) / len(distances) for e in edges]
    assert all(0.0 < share < 1.0 for share in below) and below == sorted(below)


def test_drift_after_a_contract_change_compares_the_features_both_profiles_have(spark, built: FeaturesResult) -> None:
    """A champion profiled before ``temp`` was added and while ``old_rate`` still existed: drift is measured on
    the rest (same data: PSI 0), and the drift suite has no expectation on a PSI that was never computed."""
    from retrainer.core import atomic
    from retrainer.data import drift
    from retrainer.workloads import get_workload

    contract = get_workload("flight_delay").contract
    reference = atomic.read_json(_files(built).profile)
    del reference["numeric"]["temp"]
    reference["numeric"]["old_rate"] = dict(reference["numeric"]["distance"])
    current = drift.profile(_files(built).train, contract, reference=reference)

    scores = drift.drift(reference, current)
    features = {c.name for c in contract.features}
    assert set(scores) == features - {"temp"} and set(scores.values()) == {0.0}
    assert drift.not_compared(reference, sorted(features)) == ["temp"]
    columns = {e["kwargs"]["column"] for e in contract.drift_expectations(only=scores)}
    assert "psi.temp" not in columns and "psi.distance" in columns and "psi.carrier" in columns


def test_rebuilding_a_date_replaces_its_features(spark, built: FeaturesResult, cfg) -> None:
    first = folder_fingerprint(_files(built).train)
    again = features_for(cfg)
    assert folder_fingerprint(_files(again).train) == first == again.train_fingerprint
    assert again.rows == built.rows
    assert len(parquet_parts(_files(again).train)) == cfg.tuning.part_files
    assert RunLayout.of(cfg).load(FeaturesResult) == again
    leftovers = [p.name for p in RunLayout.of(cfg).root.glob(".*")]
    assert leftovers == []


def test_valid_features_pass_and_are_promoted(spark, cfg) -> None:
    validated = validate_features(features_for(cfg), cfg)
    layout = RunLayout.of(cfg)
    assert validated.report.success and validated.report.failed == []
    assert validated.files == FeatureFiles(layout.features)
    assert not layout.features_pending.exists()
    assert layout.load(ValidationResult) == validated  # what train's workers will read
    index = Path(validated.report.data_docs_uri.removeprefix("file://").replace("%3D", "="))
    report = validated.report
    assert set(report.evaluated) == {"feature_table", "per_day"}  # no champion here: drift not measured
    # The Data Docs site (built once after every suite ran) has each suite's expectations and results, linked.
    for suite in report.evaluated:
        (results_page,) = (index.parent / "validations").rglob(f"*-{suite}.html")
        assert (index.parent / "expectations" / "flight_delay" / f"{suite}.html").exists()
        assert str(results_page.relative_to(index.parent)) in index.read_text()
    assert report.drift is None and report.drift_baseline == "not measured: no champion yet"
    assert report.by_construction == 10 and report.could_fail == sum(report.evaluated.values()) - 10
    assert report.could_fail >= 30 and report.warnings == []


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


def _shift_label(rows: list[list[str]]) -> list[list[str]]:
    """Every flight of the day arriving 60 minutes later: the file still looks right, the day's late rate does not."""
    return arrive_later(rows, 60)


def test_a_day_with_a_shifted_label_fails_per_day_validation_and_keeps_the_good_features(
    spark, cfg, corrupt_root: Path
) -> None:
    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    good = validate_features(features_for(bad_cfg), bad_cfg)  # a good run for this date first
    day = bad_cfg.window.eval_start
    _rewrite(raw_partition(corrupt_root, "flights", day), _shift_label)

    with pytest.raises(ValidationFailed) as err:
        validate_features(features_for(bad_cfg), bad_cfg)
    assert re.search(rf"\[per_day\] mean of is_late per day outside \[0.01, 0.9\] on {day}: 0\.9\d", str(err.value))
    layout = RunLayout.of(bad_cfg)
    # the earlier validated features are untouched; the bad ones are kept aside for inspection
    assert folder_fingerprint(FeatureFiles(layout.features).train) == good.features.train_fingerprint
    assert layout.features_rejected.exists() and not layout.features_pending.exists()
    assert layout.load(GateReport).success is False
    assert layout.load_optional(ValidationResult) is None  # nothing left that says "validated" for this date


def test_an_unreadable_registry_fails_validation_instead_of_skipping_drift(
    spark, cfg, corrupt_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens where the registry should be: validation raises (Airflow retries it), it does not pass
    with "drift not measured", and nothing says "validated" for the date."""
    from retrainer.registry import RegistryUnavailable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = small_config(corrupt_root, "http://127.0.0.1:9")
    features = features_for(down)
    with pytest.raises(RegistryUnavailable, match="could not read the champion alias"):
        validate_features(features, down)
    layout = RunLayout.of(down)
    assert layout.load_optional(ValidationResult) is None and not layout.features.exists()
    assert layout.features_pending.exists()  # kept for the retry


def test_features_refuse_files_changed_after_the_gate(spark, cfg, corrupt_root: Path) -> None:
    from retrainer.data.landed_files import ChangedAfterGate

    bad_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    gate = check_raw_days(bad_cfg)
    _rewrite(raw_partition(corrupt_root, "flights", bad_cfg.window.eval_start), _shift_label)
    with pytest.raises(ChangedAfterGate, match=f"flights/{bad_cfg.window.eval_start}"):
        build_features(gate, bad_cfg)
    gate = check_raw_days(bad_cfg)  # the day checked again as it now is; then a plane table swapped in
    planes = raw_dim(corrupt_root, "planes")
    planes.write_text(planes.read_text().replace(",182,", ",183,", 1))
    with pytest.raises(ChangedAfterGate, match=r"\['dims/planes'\]"):
        build_features(gate, bad_cfg)


def test_landed_range_covers_the_test_run(cfg) -> None:
    assert LAND_START <= cfg.window.train_start - dt.timedelta(days=7) and cfg.window.end <= LAND_END


# --- encoding and row-date problems: normalised, or named as bad data (never an engine crash) ----
def _bytes_rewrite(path: Path, fn) -> None:
    path.write_bytes(fn(path.read_bytes()))


def test_a_validate_retry_after_its_rename_validates_the_moved_features(spark, cfg, corrupt_root: Path) -> None:
    """validate renames features.pending to features, then saves its result: an attempt that died in
    between leaves no pending folder, and its retry validates the moved build instead of failing for ever;
    a features folder of another build is not taken for it."""
    from retrainer.core import atomic

    run_cfg = small_config(corrupt_root, cfg.engines.tracking_uri)
    features = features_for(run_cfg)
    layout = RunLayout.of(run_cfg)
    atomic.replace_dir(Path(features.folder), layout.features)  # the rename, then the attempt died
    retried = validate_features(features, run_cfg)
    assert retried.report.success and retried.features_dir == str(layout.features)
    assert retried.features.folder == str(layout.features) and layout.features.is_dir()

    other = dataclasses.replace(features_for(run_cfg), train_fingerprint="0" * 64)  # not the build in features
    atomic.replace_dir(Path(other.folder), layout.features_rejected)
    with pytest.raises(FileNotFoundError, match="run the features stage"):
        validate_features(other, run_cfg)
