"""Stage 1, features (PySpark): gated raw partitions -> train/eval Parquet, statistics and vocabularies,
the per-day profile the per-day checks bound, and the feature histograms drift is measured on.

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

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.feature_files import FeatureFiles
from retrainer.core.fingerprint import folder_fingerprint
from retrainer.core.results import FeaturesResult, RawGateResult
from retrainer.data import drift
from retrainer.data.feature_store import FeatureStore
from retrainer.data.landed_files import require_unchanged
from retrainer.spark.session import get_spark
from retrainer.spec.contract import NULL_FRACTION, Contract, DType, Role
from retrainer.stages import costed
from retrainer.workloads import RunContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
MAX_VOCABULARY = 2000


@costed("features")
def build_features(gate: RawGateResult, run: RunContext | RunConfig) -> FeaturesResult:
    """Build the run's feature sets under ``runs/<workload>/date=D/features.pending`` (replaced as a whole)
    from the landed days the raw gate passed (and only if they are still the files it checked).

    They become ``features`` only when validation passes, so bad data never replaces good data.
    """
    from pyspark import StorageLevel

    run = RunContext.of(run)
    cfg = run.config
    workload = run.workload
    window = cfg.window
    layout = run.layout
    layout.discard(FeaturesResult)  # whatever happens below, no earlier build is reported as this one
    if gate.workload != cfg.run.workload or gate.run_date != cfg.run.date:
        raise ValueError(
            f"raw gate result is for {gate.workload} {gate.run_date}, not {cfg.run.workload} {cfg.run.date}"
        )
    require_unchanged(gate, cfg)
    spark = get_spark(cfg.engines.spark_master)
    store = FeatureStore(spark, workload, cfg.engines.data_root, gate.files)
    update = store.ensure(window.days())
    log.info(
        "feature store %s: %d day(s) computed %s, %d reused",
        store.root, len(update.computed), _day_span(update.computed), update.reused,
    )  # fmt: skip

    digests = store.digests(window.days())
    table = store.read(window.days()).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with atomic.staged_dir(layout.features_pending) as tmp:
            daily, fingerprint = _write_features(table, run, FeatureFiles(tmp))
            if store.digests(window.days()) != digests:  # a late correction landed while these were read
                raise RuntimeError(
                    f"feature store days of {cfg.run.date}'s window changed while its features were "
                    "built (a concurrent run recomputed them): retry the features task"
                )
    finally:
        table.unpersist()
    result = FeaturesResult(
        workload=cfg.run.workload,
        run_date=cfg.run.date,
        folder=str(layout.features_pending),
        train_range=window.train_range,
        eval_range=window.eval_range,
        rows=_split_totals(daily, "rows", window.eval_start),
        excluded_no_label=_split_totals(daily, "excluded_no_label", window.eval_start),
        train_fingerprint=fingerprint,
        store_days_computed=update.computed,
        store_days_reused=update.reused,
        store_digests=digests,
    )
    layout.save(result)
    log.info(
        "features for %s: train %d rows %s, eval %d rows %s, %s rows without label excluded", cfg.run.date,
        result.rows["train"], result.train_range, result.rows["eval"], result.eval_range, result.excluded_no_label,
    )  # fmt: skip
    return result


def _write_features(table: DataFrame, run: RunContext, files: FeatureFiles) -> tuple[list[dict[str, Any]], str]:
    """The window's rows -> the train and eval splits, their statistics, per-day profile and drift profile
    under ``files``; returns the per-day profile and the training split's fingerprint."""
    from pyspark.sql import functions as F

    cfg, contract, window = run.config, run.workload.contract, run.config.window
    label, date_col = contract.label.name, contract.table.date_column
    labelled = table.where(F.col(label).isNotNull())
    _write_split(
        labelled.where(F.col(date_col) < F.lit(window.eval_start)), contract, files.train, cfg.tuning.part_files
    )
    _write_split(
        labelled.where(F.col(date_col) >= F.lit(window.eval_start)), contract, files.eval, cfg.tuning.part_files
    )
    excluded = _per_day(table.where(F.col(label).isNull()), date_col)
    spark = table.sparkSession
    train, evaluation = spark.read.parquet(str(files.train)), spark.read.parquet(str(files.eval))
    daily = daily_profile(train.unionByName(evaluation), contract, [d.isoformat() for d in window.days()])
    for row in daily:
        row["excluded_no_label"] = excluded.get(row["date"], 0)
    stats, edges = compute_stats(train, contract)
    atomic.write_json(files.stats, stats)
    atomic.write_json(files.daily_profile, daily)
    atomic.write_json(files.profile, drift.profile(files.train, contract, edges=edges))
    return daily, folder_fingerprint(files.train)


def _day_span(days: list[str]) -> str:
    return f"({days[0]}..{days[-1]})" if days else ""


def _write_split(df: DataFrame, contract: Contract, path: Path, part_files: int) -> None:
    """Several part files (one per input pipeline when sharding), rows in a deterministic shuffled order."""
    from pyspark.sql import functions as F

    (
        df.repartition(part_files, *[c.name for c in contract.by_role(Role.KEY, Role.CATEGORICAL)])
        .sortWithinPartitions(F.xxhash64(*contract.names), *contract.names)
        .write.mode("overwrite")
        .parquet(str(path))
    )


def daily_profile(df: DataFrame, contract: Contract, days: list[str]) -> list[dict[str, Any]]:
    """Per day: rows, the label's mean and each nullable feature's null share (what the per-day checks bound)."""
    from pyspark.sql import functions as F

    date_col, label = contract.table.date_column, contract.label.name
    nullable = contract.nullable_checked_per_day()
    aggs = [F.count(F.lit(1)).alias("rows"), F.avg(label).alias("label_mean")]
    aggs += [F.avg(F.col(c).isNull().cast("double")).alias(f"{NULL_FRACTION}{c}") for c in nullable]
    found = {r[date_col].isoformat(): r.asDict() for r in df.groupBy(date_col).agg(*aggs).collect()}
    out = []
    for d in days:
        r = found.get(d, {})
        row = {"date": d, "rows": int(r.get("rows") or 0), "label_mean": r.get("label_mean")}
        row |= {f"{NULL_FRACTION}{c}": r.get(f"{NULL_FRACTION}{c}") for c in nullable}
        out.append(row)
    return out


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


def compute_stats(train: DataFrame, contract: Contract) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Normalisation statistics and vocabularies over the training split, as small JSON, and the numeric
    features' decile edges (the drift profile's bins).

    Two Spark jobs whatever the number of features: every moment and decile in one aggregation, every
    vocabulary in one grouped count (each Spark Connect job costs a round trip and a scheduling delay,
    about 0.2 s here, more than the work on a day's rows).
    """
    from pyspark.sql import functions as F

    numeric = contract.by_role(Role.NUMERIC)
    aggs = []
    for c in numeric:
        aggs += [F.avg(c.name).alias(f"{c.name}__mean"), F.var_pop(c.name).alias(f"{c.name}__var")]
        aggs += [F.percentile_approx(c.name, drift.QUANTILES, drift.QUANTILE_ACCURACY).alias(f"{c.name}__deciles")]
    label = contract.label.name
    aggs += [F.avg(label).alias("__label_mean"), F.var_pop(label).alias("__label_var")]
    row = train.agg(*aggs, F.count(F.lit(1)).alias("__rows")).first()
    stats: dict[str, Any] = {
        "rows": int(row["__rows"]),
        "numeric": {},
        "vocabulary": vocabularies(train, contract.by_role(Role.CATEGORICAL)),
        # The label's mean and variance: a regression head predicts in these units (objectives.py).
        "label": {"mean": float(row["__label_mean"] or 0.0), "variance": float(row["__label_var"] or 1.0)},
    }
    for c in numeric:
        mean, var = row[f"{c.name}__mean"], row[f"{c.name}__var"]
        stats["numeric"][c.name] = {
            "mean": float(mean) if mean is not None else 0.0,
            "variance": float(var) if var is not None and var > 0 else 1.0,
        }
    edges = {c.name: sorted({float(e) for e in (row[f"{c.name}__deciles"] or [])}) for c in numeric}
    return stats, edges


def vocabularies(train: DataFrame, columns: list[Any]) -> dict[str, list[Any]]:
    """Each categorical column's values by descending count, ties by value (numerically for integer columns),
    at most ``MAX_VOCABULARY`` each, null left out: one grouped count over all columns at once. The order
    is the lookup layers' index order, so it must not depend on how the values are grouped."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not columns:
        return {}
    integer = {c.name for c in columns if c.dtype == DType.INT64}
    cells = F.explode(
        F.array(*[
            F.struct(
                F.lit(c.name).alias("column"),
                F.col(c.name).cast("string").alias("value"),
                (F.col(c.name).cast("long") if c.name in integer else F.lit(None).cast("long")).alias("number"),
            )
            for c in columns
        ])
    )  # fmt: skip
    counts = (
        train.select(cells.alias("cell"))
        .select("cell.*")
        .where(F.col("value").isNotNull())
        .groupBy("column", "value", "number")
        .count()
    )
    rank = Window.partitionBy("column").orderBy(F.desc("count"), F.asc("number"), F.asc("value"))
    ranked = counts.withColumn("rank", F.row_number().over(rank)).where(F.col("rank") <= MAX_VOCABULARY)
    found: dict[str, list[tuple[int, Any]]] = {c.name: [] for c in columns}
    for r in ranked.collect():
        value = int(r["number"]) if r["column"] in integer else r["value"]
        found[r["column"]].append((int(r["rank"]), value))
    return {name: [value for _, value in sorted(ranked_values)] for name, ranked_values in found.items()}
