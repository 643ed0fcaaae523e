"""Stage 0, check-raw: the raw gate. Every landed day the run reads (history days included) against the
workload's raw contract, before any feature is built.

Each landed file is scanned by Spark once: its per-day statistics (rows, quarantined rows, nulls,
values out of range or category, rows dated in another day, duplicate keys, mean and spread of the
unit-checked columns) are kept beside it in ``_gate.<contract>.json`` with the file's digest. A
later run reuses the record while the digest matches; a changed file is scanned again. Rows that do
not parse go to ``quarantine/<source>/date=D/`` with the reason. The bounds themselves are applied
on every run, by Great Expectations, to the small per-day table: they are cheap, and the relative
ones (rows, unit shifts) compare each day with its neighbours in this run.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import statistics
import uuid
from pathlib import Path
from typing import Any

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.errors import BadData
from retrainer.core.fingerprint import dict_fingerprint, file_digest
from retrainer.core.layout import RunLayout, ValidationFiles, quarantine_file, raw_gate_record, raw_partition
from retrainer.core.results import RawGateResult
from retrainer.data.gx_suites import Suite, run_suites
from retrainer.data.landed_files import check_raw_inputs
from retrainer.spec.contract import RawContract, RawSource, expectation_spec
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)
RECORD_VERSION = 1


class RawDataRejected(BadData):
    """Landed days broke the raw contract; the message names each source, day, check and value."""


def _source_fingerprint(source: RawSource) -> str:
    """Changes when what a record holds would change: the columns, how rows are dated and keyed, the
    ranges counted against, and which columns get a mean and spread (a unit check added later must
    not find a record without them and pass by default)."""
    return dict_fingerprint(
        {"v": RECORD_VERSION, "types": source.types, "key": source.key, "dates": source.row_dates,
         "ranges": [(c.name, c.min_value, c.max_value, c.categories) for c in source.columns],
         "units": [c.name for c in source.columns if c.std_per_day or c.max_shift_from_neighbours]}
    )  # fmt: skip


def check_raw_days(cfg: RunConfig) -> RawGateResult:
    """Gate the raw days of ``cfg``'s run; raises :class:`RawDataRejected` naming every failed check."""
    workload = get_workload(cfg.run.workload)
    contract = workload.raw
    days = check_raw_inputs(cfg)  # missing partitions are named before Spark starts
    layout = RunLayout.of(cfg)
    layout.discard(RawGateResult)
    root = cfg.engines.data_root

    records: dict[str, dict[str, dict[str, Any]]] = {}
    digests: dict[str, str] = {}
    scanned: list[str] = []
    reused = 0
    for source in contract.sources:
        fingerprint = _source_fingerprint(source)
        todo: dict[dt.date, str] = {}
        records[source.name] = {}
        for day in days:
            path = raw_partition(root, source.name, day)
            digest = file_digest(path)
            digests[f"{source.name}/{day}"] = digest
            record_path = raw_gate_record(root, source.name, day, contract.name)
            record = atomic.read_json(record_path) if record_path.exists() else None
            if record and record.get("digest") == digest and record.get("contract") == fingerprint:
                records[source.name][day.isoformat()] = record
                reused += 1
            else:
                todo[day] = digest
        if todo:
            fresh = _scan(cfg, source, todo)
            for day, digest in todo.items():
                record = fresh[day.isoformat()] | {"digest": digest, "contract": fingerprint}
                atomic.write_json(raw_gate_record(root, source.name, day, contract.name), record)
                records[source.name][day.isoformat()] = record
                scanned.append(f"{source.name}/{day}")

    with atomic.staged_dir(layout.raw_gate) as staging:
        suites = [day_suite(source, records[source.name], contract) for source in contract.sources]
        report = run_suites(suites, f"{contract.name}.raw", ValidationFiles(staging), ValidationFiles(layout.raw_gate))
        atomic.write_json(ValidationFiles(staging).report, report.to_dict())
    quarantined = {
        f"{s}/{d}": r["quarantined"]
        for s, by_day in records.items()
        for d, r in sorted(by_day.items())
        if r["quarantined"]
    }
    if not report.success:
        raise RawDataRejected(
            f"raw gate: {len(report.failed)} check(s) failed for the landed days of run {cfg.run.date} "
            f"(results: {report.results_uri}, Data Docs: {report.data_docs_uri}):\n  " + "\n  ".join(report.failed)
        )
    result = RawGateResult(
        workload=cfg.run.workload,
        run_date=cfg.run.date,
        files=digests,
        scanned=scanned,
        reused=reused,
        quarantined=quarantined,
        report=report,
    )
    layout.save(result)
    log.info(
        "raw gate passed: %d landed files (%d scanned, %d unchanged since checked), %d checks; quarantined rows: %s",
        len(digests), len(scanned), reused, sum(report.evaluated.values()), quarantined or "none",
    )  # fmt: skip
    return result


# --- scanning ------------------------------------------------------------------------------------


def _scan(cfg: RunConfig, source: RawSource, todo: dict[dt.date, str]) -> dict[str, dict[str, Any]]:
    """Per-day statistics of the files in ``todo`` in two Spark aggregations; quarantine files written."""
    from pyspark.sql import functions as F

    from retrainer.spark.raw_reader import DAY_COLUMN, LINE_COLUMN, PROBLEM_COLUMN, read_daily_rows, read_header
    from retrainer.spark.session import get_spark

    spark = get_spark(cfg.engines.spark_master)
    root = cfg.engines.data_root
    files = {day: str(raw_partition(root, source.name, day)) for day in todo}
    headers = {day: read_header(spark, uri) for day, uri in files.items()}
    rows = read_daily_rows(spark, source, files, headers)
    ok = F.col(PROBLEM_COLUMN).isNull()  # a usable row: the statistics below are over these
    clean = rows.where(ok)

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
    aggs.append(count_where(misdated).alias("misdated"))
    aggs.append(F.first(F.when(misdated, F.col(LINE_COLUMN)), ignorenulls=True).alias("misdated_example"))
    aggs.append(F.first(F.col(PROBLEM_COLUMN), ignorenulls=True).alias("quarantine_example"))
    stats = {r[DAY_COLUMN].isoformat(): r.asDict() for r in rows.groupBy(DAY_COLUMN).agg(*aggs).collect()}
    dupes = {
        r[DAY_COLUMN].isoformat(): int(r["dupes"])
        for r in clean.groupBy(DAY_COLUMN, *source.key)
        .count()
        .where(F.col("count") > 1)
        .groupBy(DAY_COLUMN)
        .agg(F.sum(F.col("count") - 1).alias("dupes"))
        .collect()
    }
    _write_quarantine(rows, source, todo, stats, root)

    out: dict[str, dict[str, Any]] = {}
    for day, uri in files.items():
        key = day.isoformat()
        s = stats.get(key, {})
        header = headers[day]
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
        for stat in ("nulls", "non_null", "out_of_range", "unknown", "mean", "std"):
            rec[stat] = {
                name.split(".", 1)[1]: (float(v) if stat in ("mean", "std") and v is not None else v)
                for name, v in s.items()
                if name.startswith(f"{stat}.")
            }
        out[key] = rec
    return out


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


# --- the per-day table and its suite --------------------------------------------------------------


def neighbour_median(values: dict[str, float | None], day: str, span: int) -> float | None:
    d0 = dt.date.fromisoformat(day)
    around = [
        v for k, v in values.items() if k != day and v is not None and abs((dt.date.fromisoformat(k) - d0).days) <= span
    ]
    return statistics.median(around) if around else None


def day_suite(source: RawSource, records: dict[str, dict[str, Any]], contract: RawContract) -> Suite:
    """One row per landed day of ``source`` with the statistics the contract bounds, and the suite."""
    import pandas as pd

    span = contract.neighbour_days
    days = sorted(records)
    rows_by_day = {d: float(records[d]["rows"]) or None for d in days}
    table: list[dict[str, Any]] = []
    notes: dict[tuple[str, str], str] = {}
    for d in days:
        r = records[d]
        n = r["rows"]
        usable = max(n - r["quarantined"], 1)
        row: dict[str, Any] = {
            "date": d,
            "missing_columns": len(r["missing_columns"]),
            "rows": n,
            "quarantined_fraction": r["quarantined"] / n if n else 0.0,
            "misdated_rows": r["misdated"],
            "duplicate_keys": r["duplicate_keys"],
        }
        median = neighbour_median(rows_by_day, d, span)
        row["rows_vs_neighbours"] = n / median if median else None
        notes[(d, "rows_vs_neighbours")] = f"{n} rows, neighbours' median {median:g}" if median else ""
        notes[(d, "missing_columns")] = f"{r['file']} lacks {r['missing_columns']}; header {r['header']}"
        notes[(d, "quarantined_fraction")] = (
            f"{r['quarantined']} of {n} rows, e.g. {r['quarantine_example']}; rows in {r['quarantine_file']}"
        )
        notes[(d, "misdated_rows")] = f"e.g. {r['misdated_example']} in {r['file']}"
        notes[(d, "rows")] = r["file"]
        for c in source.columns:
            if c.name in r["missing_columns"]:
                continue
            row[f"null_fraction.{c.name}"] = r["nulls"].get(c.name, 0) / usable
            non_null = max(r["non_null"].get(c.name, 0), 1)
            if c.name in r["out_of_range"]:
                row[f"out_of_range.{c.name}"] = r["out_of_range"][c.name] / non_null
            if c.name in r["unknown"]:
                row[f"unknown_category.{c.name}"] = r["unknown"][c.name] / non_null
            if c.std_per_day is not None:
                row[f"std.{c.name}"] = r["std"].get(c.name)
            if c.max_shift_from_neighbours is not None:
                means = {k: records[k]["mean"].get(c.name) for k in days}
                ref = neighbour_median(means, d, span)
                mean = r["mean"].get(c.name)
                row[f"shift.{c.name}"] = abs(mean - ref) if mean is not None and ref is not None else None
                if mean is not None and ref is not None:
                    notes[(d, f"shift.{c.name}")] = f"day mean {mean:.4g}, neighbours' median {ref:.4g}"
        table.append(row)
    frame = pd.DataFrame(table)

    def between(column: str, low: float | None, high: float | None) -> dict[str, Any]:
        return expectation_spec("expect_column_values_to_be_between", column=column, min_value=low, max_value=high)

    specs = [
        between("missing_columns", 0, 0),
        between("rows", source.min_rows, source.max_rows),
        between("rows_vs_neighbours", *source.rows_vs_neighbours),
        between("quarantined_fraction", 0, source.max_quarantined_fraction),
        between("misdated_rows", 0, 0),
        between("duplicate_keys", 0, 0),
    ]
    labels = {
        "missing_columns": f"{source.name}: missing required columns",
        "rows": f"{source.name}: rows per day",
        "rows_vs_neighbours": f"{source.name}: rows relative to the median of the {span} days either side",
        "quarantined_fraction": f"{source.name}: share of rows that do not parse (quarantined)",
        "misdated_rows": f"{source.name}: rows not dated on their partition's day",
        "duplicate_keys": f"{source.name}: rows repeating the key {list(source.key)}",
    }
    for c in source.columns:
        present = frame.get(f"null_fraction.{c.name}")
        if present is None:
            continue
        specs.append(between(f"null_fraction.{c.name}", 0, 0 if not c.nullable else c.max_null_fraction))
        labels[f"null_fraction.{c.name}"] = f"{source.name}: null share of {c.name}"
        if f"out_of_range.{c.name}" in frame:
            specs.append(between(f"out_of_range.{c.name}", 0, round(1 - c.mostly, 9)))
            labels[f"out_of_range.{c.name}"] = (
                f"{source.name}: share of {c.name} values not in [{c.min_value}, {c.max_value}]"
            )
        if f"unknown_category.{c.name}" in frame:
            specs.append(between(f"unknown_category.{c.name}", 0, round(1 - c.mostly, 9)))
            labels[f"unknown_category.{c.name}"] = f"{source.name}: share of {c.name} not in {list(c.categories or ())}"
        if c.std_per_day is not None and f"std.{c.name}" in frame:
            specs.append(between(f"std.{c.name}", *c.std_per_day))
            labels[f"std.{c.name}"] = f"{source.name}: standard deviation of {c.name} (wrong units?)"
        if c.max_shift_from_neighbours is not None and f"shift.{c.name}" in frame:
            specs.append(between(f"shift.{c.name}", 0, c.max_shift_from_neighbours))
            labels[f"shift.{c.name}"] = (
                f"{source.name}: distance of the day's mean {c.name} from its neighbours' (wrong units?)"
            )
    return Suite(name=source.name, frame=frame, specs=specs, labels=labels, notes=notes)
