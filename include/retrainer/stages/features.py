"""Stage 1, features (PySpark): raw partitions -> train/eval Parquet, statistics and vocabularies.

The statistics (mean/variance of numeric columns) and vocabularies (categorical values) are
computed here, in Spark, over the training split and saved beside it: lookup tables and adapted
normalisation are not part of a TF checkpoint, so every worker and every retry must read the same
tables from disk. Nothing is collected to the driver but aggregates.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer import atomic
from retrainer.config import RunConfig
from retrainer.contract import Contract, Role
from retrainer.fingerprint import folder_fingerprint
from retrainer.landing import days_between
from retrainer.layout import FEATURES_META, RunLayout, feature_files
from retrainer.spark_io import RawReader
from retrainer.spark_session import get_spark
from retrainer.workloads import get_workload

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
MAX_VOCABULARY = 2000


def build_features(cfg: RunConfig) -> dict[str, Any]:
    """Build the run's feature sets under ``runs/<workload>/date=D/features.pending`` (replaced as a whole).

    They become ``features`` only when validation passes, so bad data never replaces good data.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    workload = get_workload(cfg.workload)
    contract = workload.contract
    layout = RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date)
    spark = get_spark(cfg.spark_master)
    reader = RawReader(spark, cfg.data_root)

    label, date_col = contract.label.name, contract.table.date_column
    table = workload.build_features(reader, cfg.train_start, cfg.end).select(
        *[F.col(c).cast(t).alias(c) for c, t in contract.spark_type_names().items()]
    )
    table = table.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        labelled = table.where(F.col(label).isNotNull())
        splits = {
            "train": labelled.where(F.col(date_col) < F.lit(cfg.eval_start)),
            "eval": labelled.where(F.col(date_col) >= F.lit(cfg.eval_start)),
        }
        excluded = _per_day(table.where(F.col(label).isNull()), date_col)
        with atomic.staged_dir(layout.features_pending) as tmp:
            for name, df in splits.items():
                _write_split(df, contract, tmp / name, cfg.part_files)
            written = {name: spark.read.parquet(str(tmp / name)) for name in splits}
            rows_per_day = _per_day(written["train"].unionByName(written["eval"]), date_col)
            days = [d.isoformat() for d in days_between(cfg.train_start, cfg.end)]
            daily = [{"date": d, "rows": rows_per_day.get(d, 0), "excluded_no_label": excluded.get(d, 0)} for d in days]
            stats = compute_stats(written["train"], contract)
            meta = {
                "run_date": cfg.run_date.isoformat(),
                "workload": cfg.workload,
                **feature_files(layout.features_pending),
                "validated": False,
                "train_range": [cfg.train_start.isoformat(), cfg.eval_start.isoformat()],
                "eval_range": [cfg.eval_start.isoformat(), cfg.end.isoformat()],
                "rows": _split_totals(daily, "rows", cfg.eval_start),
                "excluded_no_label": _split_totals(daily, "excluded_no_label", cfg.eval_start),
                "train_fingerprint": folder_fingerprint(tmp / "train"),
            }
            atomic.write_json(tmp / "stats.json", stats)
            atomic.write_json(tmp / "daily_counts.json", daily)
            atomic.write_json(tmp / "raw_manifest.json", reader.manifest)
            atomic.write_json(tmp / FEATURES_META, meta)
    finally:
        table.unpersist()
    log.info(
        "features for %s: train %d rows %s, eval %d rows %s, %s rows without label excluded",
        cfg.run_date,
        meta["rows"]["train"],
        meta["train_range"],
        meta["rows"]["eval"],
        meta["eval_range"],
        meta["excluded_no_label"],
    )
    return meta


def _write_split(df: DataFrame, contract: Contract, path: Path, part_files: int) -> None:
    """Several part files (one per input pipeline when sharding), rows in a deterministic shuffled order."""
    from pyspark.sql import functions as F

    (
        df.repartition(part_files, *[c.name for c in contract.by_role(Role.KEY, Role.CATEGORICAL)])
        .sortWithinPartitions(F.xxhash64(*contract.names), *contract.names)
        .write.mode("overwrite")
        .parquet(str(path))
    )


def _split_totals(daily: list[dict[str, Any]], key: str, eval_start: dt.date) -> dict[str, int]:
    """Sum a per-day count over the training days and over the evaluation days."""
    cut = eval_start.isoformat()
    return {
        "train": sum(r[key] for r in daily if r["date"] < cut),
        "eval": sum(r[key] for r in daily if r["date"] >= cut),
    }


def _per_day(df: DataFrame, date_col: str) -> dict[str, int]:
    return {
        (r[date_col].isoformat() if isinstance(r[date_col], dt.date) else str(r[date_col])): int(r["count"])
        for r in df.groupBy(date_col).count().collect()
        if r[date_col] is not None
    }


def compute_stats(train: DataFrame, contract: Contract) -> dict[str, Any]:
    """Normalisation statistics and vocabularies over the training split, as small JSON."""
    from pyspark.sql import functions as F

    numeric = contract.by_role(Role.NUMERIC)
    aggs = []
    for c in numeric:
        aggs += [F.avg(c.name).alias(f"{c.name}__mean"), F.var_pop(c.name).alias(f"{c.name}__var")]
    row = train.agg(*aggs, F.count(F.lit(1)).alias("__rows")).first() if aggs else None
    stats: dict[str, Any] = {"rows": int(row["__rows"]) if row else train.count(), "numeric": {}, "vocabulary": {}}
    for c in numeric:
        mean, var = row[f"{c.name}__mean"], row[f"{c.name}__var"]
        stats["numeric"][c.name] = {
            "mean": float(mean) if mean is not None else 0.0,
            "variance": float(var) if var is not None and var > 0 else 1.0,
        }
    for c in contract.by_role(Role.CATEGORICAL):
        values = (
            train.where(F.col(c.name).isNotNull())
            .groupBy(c.name)
            .count()
            .orderBy(F.desc("count"), F.asc(c.name))
            .limit(MAX_VOCABULARY)
            .collect()
        )
        stats["vocabulary"][c.name] = [r[c.name] for r in values]
    return stats
