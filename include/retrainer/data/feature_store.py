"""The day-partitioned feature store: feature rows are computed once per landed day and reused by
every run whose window covers that day.

Layout: ``<data root>/feature_store/<workload>/v=<version>/<date column>=<day>/`` holding the day's
Parquet part files (none when the day has no flights) and ``_inputs.json``, the digests of exactly the
raw files and dimension tables the day's rows were computed from (the day itself and the
``history_days`` before it, which lagged features read). ``version`` is a hash of the workload's
feature contract, raw contract and ``feature_version``: changing any of them starts a new store,
so nothing computed by older code is read by newer code.

A day is recomputed only when its folder is missing or its inputs changed: a late correction of one
raw day recomputes that day and the days whose lookback covers it, and no day reads anything later
than itself (point-in-time: see tests/test_feature_store.py). Missing days are computed in batches
of consecutive days (one Spark job per batch) under a file lock per store, so overlapping runs of a
backfill compute a day once; each day's folder is then moved into place with
:func:`atomic.replace_dir`, so a reader sees the old day or the new day, never a half-written one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import datetime as dt
import logging
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer.core import atomic, locks
from retrainer.core.run_window import days_between
from retrainer.core.fingerprint import dict_fingerprint, file_digest, folder_fingerprint
from retrainer.core.layout import raw_gate_record
from retrainer.data.landed_files import DIMS, ChangedAfterGate, changed_files
from retrainer.spark.raw_reader import RawReader
from retrainer.workloads import Workload

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
INPUTS_FILE = "_inputs.json"
# Consecutive missing days computed by one Spark job (a quarter): each job also reads its first day's lookback again
# and pays a job's set-up; the year's store in 31-day batches took 72-77 s (115-127 s of the JVM's CPU), in
# 92-day ones 52-53 s (84-87 s) on the 2-core machine (docs/benchmarks.md). The JVM's memory is capped by the
# server's driver memory whatever the batch (Spark spills); nothing of the rows reaches Python.
MAX_BATCH_DAYS = 92


def store_version(workload: Workload) -> str:
    """What the stored rows depend on besides the raw data: the contracts and the feature code's version."""
    return dict_fingerprint(
        {"contract": repr(workload.contract), "raw": repr(workload.raw), "code": workload.feature_version}
    )[:12]


def store_root(data_root: str | Path, workload: Workload) -> Path:
    return Path(data_root) / "feature_store" / workload.name / f"v={store_version(workload)}"


def day_folder(data_root: str | Path, workload: Workload, day: dt.date) -> Path:
    """Where the store keeps ``day``'s rows: a Hive-style partition of the workload's date column."""
    return store_root(data_root, workload) / f"{workload.contract.table.date_column}={day.isoformat()}"


def day_digest(folder: Path) -> str:
    """Digest of a stored day's rows (their Parquet data pages); a day without flights has no part files and
    the digest of nothing. What ties a run's features, and the cached checks of a day, to the rows read."""
    if not any(folder.glob("*.parquet")):
        return hashlib.sha256(b"").hexdigest()
    return folder_fingerprint(folder)


@dataclasses.dataclass(frozen=True)
class StoreUpdate:
    """What one call of :meth:`FeatureStore.ensure` did."""

    computed: list[str]  # days recomputed now (ISO dates)
    reused: int  # days whose stored rows were current


@dataclasses.dataclass
class FeatureStore:
    spark: SparkSession
    workload: Workload
    data_root: str
    raw_files: Mapping[str, str]  # "<source>/<day>" and "dims/<name>" -> sha256, as the raw gate checked them

    @property
    def root(self) -> Path:
        return store_root(self.data_root, self.workload)

    def day_dir(self, day: dt.date) -> Path:
        return day_folder(self.data_root, self.workload, day)

    def digests(self, days: Iterable[dt.date]) -> dict[str, str]:
        """The digest of each day's stored rows, by ISO day."""
        return {d.isoformat(): day_digest(self.day_dir(d)) for d in days}

    def inputs_of(self, day: dt.date, dims: Mapping[str, str]) -> dict[str, object]:
        """The digests of every raw input of ``day``'s rows: its lookback's daily files and the dimensions."""
        lookback = days_between(day - dt.timedelta(days=self.workload.history_days), day + dt.timedelta(days=1))
        files = {}
        for source in self.workload.daily_sources:
            for d in lookback:
                key = f"{source}/{d.isoformat()}"
                if key not in self.raw_files:
                    raise ValueError(
                        f"the raw gate did not check {key}, which the features of {day} read: run check-raw "
                        "for a window that covers it"
                    )
                files[key] = self.raw_files[key]
        return {"daily": files, "dims": dict(dims)}

    def dimension_digests(self) -> dict[str, str]:
        """The dimension tables' digests as the raw gate checked them (what every day's rows join)."""
        missing = [f"{DIMS}/{n}" for n in self.workload.dimensions if f"{DIMS}/{n}" not in self.raw_files]
        if missing:
            raise ValueError(f"the raw gate did not check {missing}, which every day's features read: run check-raw")
        return {name: self.raw_files[f"{DIMS}/{name}"] for name in self.workload.dimensions}

    def is_current(self, day: dt.date, inputs: Mapping[str, object]) -> bool:
        return atomic.read_record(self.day_dir(day) / INPUTS_FILE) == inputs

    def ensure(self, days: Sequence[dt.date]) -> StoreUpdate:
        """Compute the days of ``days`` whose stored rows are missing or stale; leave the others alone."""
        dims = self.dimension_digests()
        wanted = {d: self.inputs_of(d, dims) for d in days}
        # Runs of a backfill overlap: the second to need a day waits for the first, then finds it current.
        with locks.exclusive(self.root.parent / f".{self.root.name}.lock", "feature store lock"):
            missing = [d for d in days if not self.is_current(d, wanted[d])]
            for batch in _consecutive_batches(missing, MAX_BATCH_DAYS):
                self._compute(batch, {d: wanted[d] for d in batch})
        return StoreUpdate(computed=[d.isoformat() for d in missing], reused=len(days) - len(missing))

    def _compute(self, batch: list[dt.date], inputs: Mapping[dt.date, object]) -> None:
        from pyspark.sql import functions as F

        start, end = batch[0], batch[-1] + dt.timedelta(days=1)
        raw_days = days_between(start - dt.timedelta(days=self.workload.history_days), end)
        contract, date_col = self.workload.contract, self.workload.contract.table.date_column
        t0 = time.perf_counter()
        rows = self.workload.build_features(RawReader(self.spark, self.data_root), start, end, raw_days).select(
            *[F.col(c).cast(t).alias(c) for c, t in contract.spark_type_names().items()]
        )
        staging = self.root / f"_staging-{uuid.uuid4().hex[:8]}"
        try:
            rows.repartition(date_col).write.partitionBy(date_col).parquet(str(staging))
            written = {d: _rows_in(staging / self.day_dir(d).name) for d in batch}
            self._require_inputs_unchanged(inputs)  # Spark read the files just now: were they the gated bytes?
            for day in batch:
                part = staging / self.day_dir(day).name
                part.mkdir(parents=True, exist_ok=True)  # a day without flights is stored empty
                atomic.write_json(part / INPUTS_FILE, inputs[day])
                atomic.replace_dir(part, self.day_dir(day))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        rows_in = ", ".join(f"{source} {n:,}" for source, n in self.raw_rows(batch).items())
        rows_out = f"{sum(written.values()):,}"
        log.info(
            "feature store: computed %d day(s) %s..%s from %d raw day(s): rows in (those days, as the raw gate "
            "counted them) %s; %s rows out in %.1f s",
            len(batch), start, batch[-1], len(raw_days), rows_in, rows_out, time.perf_counter() - t0,
        )  # fmt: skip

    def _require_inputs_unchanged(self, inputs: Mapping[dt.date, Any]) -> None:
        """Hash again, after Spark has read them, every raw file the batch's rows came from.

        The stage checks the files against the raw gate's digests before it starts, but Spark reads them
        later (lazily, in the job that writes the batch): a file replaced in between would give rows from
        bytes nobody checked. Nothing of the batch is stored if any digest differs."""
        expected: dict[str, str] = {}
        for day_inputs in inputs.values():
            expected |= day_inputs["daily"] | {f"{DIMS}/{name}": d for name, d in day_inputs["dims"].items()}
        if changed := changed_files(self.data_root, expected):
            raise ChangedAfterGate(
                f"landed files changed while the feature store read them: {changed}; nothing of "
                f"{min(inputs)}..{max(inputs)} was stored: run check-raw again"
            )

    def raw_rows(self, days: Sequence[dt.date]) -> dict[str, int]:
        """Landed rows of ``days`` per daily source, from the raw gate's records (no Spark job)."""
        out = {}
        for source in self.workload.daily_sources:
            records = (raw_gate_record(self.data_root, source, d, self.workload.raw.name) for d in days)
            out[source] = sum(int(atomic.read_json(r).get("rows", 0)) for r in records if r.exists())
        return out

    def read(self, days: Iterable[dt.date]) -> DataFrame:
        """The stored rows of ``days`` (each must be current: call :meth:`ensure` first), typed by the contract."""
        from pyspark.sql import functions as F

        contract, date_col = self.workload.contract, self.workload.contract.table.date_column
        paths = [str(self.day_dir(d)) for d in days if any(self.day_dir(d).glob("*.parquet"))]
        types = contract.spark_type_names()
        if not paths:
            return self.spark.createDataFrame([], ", ".join(f"{c} {t}" for c, t in types.items()))
        df = self.spark.read.option("basePath", str(self.root)).parquet(*paths)
        return df.select(*[F.col(c).cast(t).alias(c) for c, t in types.items()]).where(F.col(date_col).isNotNull())


def _rows_in(folder: Path) -> int:
    """Rows in a folder of Parquet part files, from their footers (no Spark job)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet")) if folder.exists() else 0


def _consecutive_batches(days: Sequence[dt.date], max_days: int) -> list[list[dt.date]]:
    batches: list[list[dt.date]] = []
    for d in sorted(days):
        if batches and d - batches[-1][-1] == dt.timedelta(days=1) and len(batches[-1]) < max_days:
            batches[-1].append(d)
        else:
            batches.append([d])
    return batches
