"""The day-partitioned feature store: each day computed once, only stale days recomputed, and no day's
features read anything dated after it (point-in-time), on the real Spark and the real landed files."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from retrainer.core.layout import raw_partition
from retrainer.core.run_window import days_between
from retrainer.data.landed_files import landed_digests
from retrainer.workloads import get_workload
from support import RUN_DATE, small_config

WORKLOAD = get_workload("flight_delay")
DAYS = days_between(dt.date(2013, 1, 28), RUN_DATE)  # 8 days, each with its 7 days of lookback landed


@pytest.fixture
def root(landed: Path, tmp_path: Path) -> Path:
    """A private copy of the landed raw files (these tests rewrite some of them)."""
    shutil.copytree(landed / "raw", tmp_path / "raw")
    return tmp_path


def store_for(spark, root: Path):
    from retrainer.data.feature_store import FeatureStore

    first = DAYS[0] - dt.timedelta(days=WORKLOAD.history_days)
    days = days_between(first, DAYS[-1] + dt.timedelta(days=1))
    digests = landed_digests(root, WORKLOAD.daily_sources, days, WORKLOAD.dimensions)
    return FeatureStore(spark, WORKLOAD, str(root), digests)


def stored_rows(store, day: dt.date) -> list[dict]:
    """A day's stored rows in a canonical order (part files carry no order)."""
    files = sorted(store.day_dir(day).glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: [(v is None, str(v)) for v in r.values()])


def rewrite_flights(root: Path, day: dt.date, shift_minutes: int) -> None:
    """Change every flight of ``day``: arrival delays (the label and the lagged late rates) move."""
    import csv

    path = raw_partition(root, "flights", day)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["arr_delay"] not in ("", "NA"):
            r["arr_delay"] = str(int(float(r["arr_delay"])) + shift_minutes)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_7_day_backfill_computes_each_day_once_even_with_two_runs_at_a_time(spark, root: Path) -> None:
    """A 7-day backfill (2-day windows), two runs at a time (as the DAG's max_active_runs allows): every
    day is computed by exactly one of them; the other waits on the store's lock and reuses it."""
    from concurrent.futures import ThreadPoolExecutor

    run_dates = days_between(DAYS[0] + dt.timedelta(days=2), DAYS[-1] + dt.timedelta(days=2))
    assert len(run_dates) == 7
    windows = [days_between(d - dt.timedelta(days=2), d) for d in run_dates]
    with ThreadPoolExecutor(max_workers=2) as pool:
        updates = list(pool.map(lambda days: store_for(spark, root).ensure(days), windows))
    computed = [d for u in updates for d in u.computed]
    assert sorted(computed) == sorted({d.isoformat() for w in windows for d in w})  # each once
    assert sum(u.reused for u in updates) == sum(len(w) for w in windows) - len(computed)


def test_features_of_a_day_never_read_later_days(spark, root: Path) -> None:
    """Point in time: change every raw flight dated on or after X; the features of every day before X
    are identical when recomputed from scratch, and days from X on did change."""
    cut = DAYS[4]
    before = store_for(spark, root)
    before.ensure(DAYS)
    expected = {d: stored_rows(before, d) for d in DAYS}
    for day in days_between(cut, DAYS[-1] + dt.timedelta(days=2)):
        rewrite_flights(root, day, 45)
    shutil.rmtree(before.root)
    after = store_for(spark, root)
    assert after.ensure(DAYS).computed == [d.isoformat() for d in DAYS]
    for day in DAYS:
        if day < cut:
            assert stored_rows(after, day) == expected[day], day
        else:
            assert stored_rows(after, day) != expected[day], day


def test_a_late_correction_recomputes_only_the_days_that_read_it(spark, root: Path) -> None:
    store = store_for(spark, root)
    store.ensure(DAYS)
    untouched = {d: stored_rows(store, d) for d in DAYS}
    corrected = DAYS[2]
    rewrite_flights(root, corrected, 30)
    update = store_for(spark, root).ensure(DAYS)
    # The corrected day and the 7 days whose lagged rates look back over it.
    reads_it = [d for d in DAYS if corrected <= d <= corrected + dt.timedelta(days=WORKLOAD.history_days)]
    assert update.computed == [d.isoformat() for d in reads_it]
    for day in DAYS:
        if day not in reads_it:
            assert stored_rows(store, day) == untouched[day], day
    assert stored_rows(store, corrected) != untouched[corrected]


def test_a_change_of_feature_code_starts_a_new_store(spark, root: Path) -> None:
    import dataclasses

    from retrainer.data.feature_store import store_root

    bumped = dataclasses.replace(WORKLOAD, feature_version=WORKLOAD.feature_version + "-next")
    assert store_root(root, bumped) != store_root(root, WORKLOAD)
    assert store_root(root, WORKLOAD) == store_root(root, get_workload("flight_delay"))


def test_the_next_days_run_computes_exactly_one_day(spark, root: Path, tmp_path: Path, caplog) -> None:
    """Through the features stage: the run for RUN_DATE after the run for the day before."""
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.features import build_features

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    earlier = small_config(root, tracking, date=RUN_DATE - dt.timedelta(days=1))
    first = build_features(check_raw_days(earlier), earlier)
    assert len(first.store_days_computed) == 7 and first.store_days_reused == 0
    cfg = small_config(root, tracking)
    with caplog.at_level(logging.INFO, logger="retrainer"):
        caplog.clear()  # only this run's records (earlier tests may have left INFO enabled)
        result = build_features(check_raw_days(cfg), cfg)
    new_day = (RUN_DATE - dt.timedelta(days=1)).isoformat()
    assert result.store_days_computed == [new_day] and result.store_days_reused == 6
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"1 day(s) computed ({new_day}..{new_day}), 6 reused" in m for m in messages)
    assert sum("feature store: computed" in m for m in messages) == 1  # one Spark job for the one day
    (batch,) = [m for m in messages if "feature store: computed" in m]
    landed = raw_partition(root, "flights", dt.date.fromisoformat(new_day))
    flights = len(landed.read_text().splitlines()) - 1  # the landed CSV, without its header
    assert f"rows in (those days, as the raw gate counted them) flights {flights:,}, weather " in batch, batch
    store = store_for(spark, root)
    assert all(store.is_current(d, store.inputs_of(d, store.dimension_digests())) for d in cfg.window.days())
    assert not list(store.root.glob("_staging-*"))


def test_a_file_replaced_after_the_gate_and_before_spark_reads_it_stores_nothing(
    spark, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The features stage checks the landed files against the gate before it starts, but Spark reads them
    later, in the job that writes the batch. A file replaced in between (here: as the reader is made, after
    the digests were taken) fails the batch naming the file, and no day of the batch is stored."""
    from retrainer.data import feature_store
    from retrainer.data.landed_files import ChangedAfterGate

    day = DAYS[-1]
    store = store_for(spark, root)  # the digests the raw gate recorded

    class ReplacedUnderneath(feature_store.RawReader):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            rewrite_flights(root, day, 30)

    monkeypatch.setattr(feature_store, "RawReader", ReplacedUnderneath)
    with pytest.raises(ChangedAfterGate, match=rf"changed while the feature store read them: \['flights/{day}'\]"):
        store.ensure([day])
    assert not store.day_dir(day).exists()
    assert not list(store.root.glob("_staging-*"))
