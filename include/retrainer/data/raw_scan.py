"""The raw gate's scan: per-day statistics of landed files in Spark, and the quarantine of unusable rows.

A day's statistics are a record kept beside the landed file (``_gate.<contract>.json``, with the file's
digest and the source's fingerprint), so a later run scans only new or changed files.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Any

from retrainer.core.fingerprint import dict_fingerprint
from retrainer.core.layout import quarantine_file, raw_partition
from retrainer.spec.raw_contract import RawSource

RECORD_VERSION = 1


def source_fingerprint(source: RawSource) -> str:
    """Changes when what a record holds would change: the columns, how rows are dated and keyed, the
    ranges counted against, and which columns get a mean and spread (a unit check added later must
    not find a record without them and pass by default)."""
    return dict_fingerprint(
        {"v": RECORD_VERSION, "types": source.types, "key": source.key, "dates": source.row_dates,
         "ranges": [(c.name, c.min_value, c.max_value, c.categories) for c in source.columns],
         "units": [c.name for c in source.columns if c.std_per_day or c.max_shift_from_neighbours],
         "rules": [(r.name, r.holds) for r in source.rules]}
    )  # fmt: skip


DISTINCT_KEYS = "_distinct_keys"  # usable rows' distinct keys: the rest of the usable rows repeat a key


def scan_days(spark_master: str, root: str, source: RawSource, todo: dict[dt.date, str]) -> dict[str, dict[str, Any]]:
    """Per-day statistics of the files in ``todo`` in one Spark job (after the headers' one); quarantine files
    written (one more job, only when a file has unusable rows)."""
    from pyspark.sql import functions as F

    from retrainer.spark.raw_reader import DAY_COLUMN, PROBLEM_COLUMN, read_daily_rows, read_headers
    from retrainer.spark.session import get_spark

    spark = get_spark(spark_master)
    files = {day: str(raw_partition(root, source.name, day)) for day in todo}
    headers = read_headers(spark, files)
    rows = read_daily_rows(spark, source, files, headers)
    ok = F.col(PROBLEM_COLUMN).isNull()  # a usable row: the statistics below are over these
    # One aggregation (a Spark Connect round trip costs more than a day's rows), duplicate keys included as usable
    # rows minus distinct keys: joining a grouped count of the keys instead made Spark's constraint propagation
    # over this wide plan take 5 s of a 7 s scan once the contract had 19 columns and its row rules.
    stats: dict[str, dict[str, Any]] = {}
    dupes: dict[str, int] = {}
    for r in rows.groupBy(DAY_COLUMN).agg(*_day_aggregations(source, ok)).collect():
        row = r.asDict()
        usable = int(row["rows"] or 0) - int(row["quarantined"] or 0)
        dupes[row[DAY_COLUMN].isoformat()] = usable - int(row.pop(DISTINCT_KEYS) or 0)
        stats[row[DAY_COLUMN].isoformat()] = row
    _write_quarantine(rows, source, todo, stats, root)
    return {
        day.isoformat(): _record(source, day, uri, headers[day], stats.get(day.isoformat(), {}), dupes, root)
        for day, uri in files.items()
    }


def _day_aggregations(source: RawSource, ok: Any) -> list[Any]:
    """One Spark aggregate per statistic the raw contract bounds (the caller groups them by day)."""
    from pyspark.sql import functions as F

    from retrainer.spark.raw_reader import DAY_COLUMN, LINE_COLUMN, PROBLEM_COLUMN

    def count_where(cond: Any) -> Any:
        return F.sum(F.when(cond, 1).otherwise(0))

    aggs = [
        F.count(F.lit(1)).alias("rows"),
        count_where(~ok).alias("quarantined"),
        count_where(F.col(PROBLEM_COLUMN).contains("malformed line")).alias("malformed"),
    ]
    for c in source.columns:
        col = F.col(c.name)
        aggs.append(count_where(ok & col.isNull()).alias(f"nulls.{c.name}"))
        aggs.append(count_where(ok & col.isNotNull()).alias(f"non_null.{c.name}"))
        if c.min_value is not None or c.max_value is not None:
            low = col < F.lit(c.min_value) if c.min_value is not None else F.lit(False)
            high = col > F.lit(c.max_value) if c.max_value is not None else F.lit(False)
            aggs.append(count_where(ok & (low | high)).alias(f"out_of_range.{c.name}"))
        if c.categories is not None:
            aggs.append(count_where(ok & col.isNotNull() & ~col.isin(*c.categories)).alias(f"unknown.{c.name}"))
        if c.std_per_day is not None or c.max_shift_from_neighbours is not None:
            aggs.append(F.avg(F.when(ok, col)).alias(f"mean.{c.name}"))
            aggs.append(F.stddev(F.when(ok, col)).alias(f"std.{c.name}"))
    misdated = F.lit(False)
    for expr in source.row_dates:
        d = F.expr(expr)
        misdated = misdated | d.isNull() | (d != F.col(DAY_COLUMN))
    misdated = ok & misdated
    for rule in source.rules:  # a row with a value missing is not counted: the null shares bound those
        broken = ok & ~F.coalesce(F.expr(rule.holds), F.lit(True))
        aggs.append(count_where(broken).alias(f"broken.{rule.name}"))
        aggs.append(F.first(F.when(broken, F.col(LINE_COLUMN)), ignorenulls=True).alias(f"broken_example.{rule.name}"))
    aggs.append(count_where(misdated).alias("misdated"))
    aggs.append(F.count_distinct(F.when(ok, F.struct(*source.key))).alias(DISTINCT_KEYS))
    aggs.append(F.first(F.when(misdated, F.col(LINE_COLUMN)), ignorenulls=True).alias("misdated_example"))
    aggs.append(F.first(F.col(PROBLEM_COLUMN), ignorenulls=True).alias("quarantine_example"))
    return aggs


def _record(
    source: RawSource, day: dt.date, uri: str, header: list[str], s: dict[str, Any], dupes: dict[str, int], root: str
) -> dict[str, Any]:
    """What the gate keeps about one landed file: its header, its counts and statistics, and examples."""
    key = day.isoformat()
    rec: dict[str, Any] = {
        "source": source.name,
        "date": key,
        "file": uri,
        "header": header,
        "missing_columns": [c for c in source.types if c not in header],
        "extra_columns": [c for c in header if c not in source.types],
        "rows": int(s.get("rows") or 0),
        "quarantined": int(s.get("quarantined") or 0),
        "malformed": int(s.get("malformed") or 0),
        "quarantine_example": s.get("quarantine_example"),
        "quarantine_file": str(quarantine_file(root, source.name, day)) if s.get("quarantined") else None,
        "misdated": int(s.get("misdated") or 0),
        "misdated_example": s.get("misdated_example"),
        "duplicate_keys": dupes.get(key, 0),
    }
    for stat in ("nulls", "non_null", "out_of_range", "unknown", "mean", "std", "broken", "broken_example"):
        rec[stat] = {
            name.split(".", 1)[1]: (float(v) if stat in ("mean", "std") and v is not None else v)
            for name, v in s.items()
            if name.startswith(f"{stat}.")
        }
    return rec


def _write_quarantine(rows: Any, source: RawSource, todo: dict[dt.date, str], stats: dict[str, Any], root: str) -> None:
    """Replace each scanned day's quarantine file: the unusable rows with their reason, or none."""
    from pyspark.sql import functions as F

    from retrainer.spark.raw_reader import DAY_COLUMN, LINE_COLUMN, PROBLEM_COLUMN

    bad_days = [d for d in todo if int((stats.get(d.isoformat()) or {}).get("quarantined") or 0)]
    for day in todo:
        if day not in bad_days:
            shutil.rmtree(quarantine_file(root, source.name, day).parent, ignore_errors=True)
    if not bad_days:
        return
    staging = Path(root) / "quarantine" / source.name / f".staging-{uuid.uuid4().hex}"  # concurrent runs may scan too
    (
        rows.where(F.col(PROBLEM_COLUMN).isNotNull())
        .select(F.col(DAY_COLUMN).cast("string").alias("day"), F.col(PROBLEM_COLUMN).alias("problem"),
                F.col(LINE_COLUMN).alias("line"))
        .coalesce(1)
        .write.partitionBy("day")
        .csv(str(staging), header=True, escape='"')
    )  # fmt: skip
    for day in bad_days:
        parts = sorted((staging / f"day={day.isoformat()}").glob("part-*.csv"))
        target = quarantine_file(root, source.name, day)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "wb") as out:
            for i, part in enumerate(parts):
                with open(part, "rb") as fh:
                    if i:
                        fh.readline()  # one header
                    shutil.copyfileobj(fh, out)
        tmp.replace(target)
    shutil.rmtree(staging, ignore_errors=True)
