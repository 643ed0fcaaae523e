"""The raw gate's suite: one row per landed day of a source, with the statistics its contract bounds.

The row holds shares and distances, not raw counts, so one expectation per statistic covers every day;
relative checks compare a day with the median of its neighbours inside the run.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Container
from typing import Any

from retrainer.data.gx_suites import Suite
from retrainer.spec.contract import expectation_spec
from retrainer.spec.raw_contract import RawColumn, RawContract, RawSource


def neighbour_median(values: dict[str, float | None], day: str, span: int) -> float | None:
    d0 = dt.date.fromisoformat(day)
    around = [
        v for k, v in values.items() if k != day and v is not None and abs((dt.date.fromisoformat(k) - d0).days) <= span
    ]
    return statistics.median(around) if around else None


def day_suite(source: RawSource, records: dict[str, dict[str, Any]], contract: RawContract) -> Suite:
    """One row per landed day of ``source`` with the statistics the contract bounds, and the suite."""
    import pandas as pd

    notes: dict[tuple[str, str], str] = {}
    table = [_day_row(source, records, d, contract.neighbour_days, notes) for d in sorted(records)]
    frame = pd.DataFrame(table)
    specs, labels = _expectations(source, frame, contract.neighbour_days)
    return Suite(name=source.name, frame=frame, specs=specs, labels=labels, notes=notes)


def _day_row(
    source: RawSource, records: dict[str, dict[str, Any]], d: str, span: int, notes: dict[tuple[str, str], str]
) -> dict[str, Any]:
    """Day ``d``'s statistics; what a failure message should show about each goes into ``notes``."""
    rows_by_day = {k: float(records[k]["rows"]) or None for k in records}
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
    for rule in source.rules:
        broken = r["broken"].get(rule.name, 0)  # absent only for a day without rows (failed by its row count)
        row[f"broken.{rule.name}"] = broken / usable
        notes[(d, f"broken.{rule.name}")] = (
            f"{broken} of {usable} rows, e.g. {r['broken_example'].get(rule.name)}" if broken else ""
        )
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
            means = {k: records[k]["mean"].get(c.name) for k in records}
            ref = neighbour_median(means, d, span)
            mean = r["mean"].get(c.name)
            row[f"shift.{c.name}"] = abs(mean - ref) if mean is not None and ref is not None else None
            if mean is not None and ref is not None:
                notes[(d, f"shift.{c.name}")] = f"day mean {mean:.4g}, neighbours' median {ref:.4g}"
    return row


def between(column: str, low: float | None, high: float | None) -> dict[str, Any]:
    return expectation_spec("expect_column_values_to_be_between", column=column, min_value=low, max_value=high)


def column_checks(owner: str, c: RawColumn, present: Container[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The bounds every raw table (a landed day, a dimension table) puts on a column's statistics: its null share
    and its shares out of range and out of category, for those of them in ``present``; and their labels."""
    specs: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    if f"null_fraction.{c.name}" not in present:  # a missing column: reported as such, not per statistic
        return specs, labels
    specs.append(between(f"null_fraction.{c.name}", 0, 0 if not c.nullable else c.max_null_fraction))
    labels[f"null_fraction.{c.name}"] = f"{owner}: null share of {c.name}"
    for stat, label in (
        ("out_of_range", f"share of {c.name} values not in [{c.min_value}, {c.max_value}]"),
        ("unknown_category", f"share of {c.name} not in {list(c.categories or ())}"),
    ):
        if f"{stat}.{c.name}" in present:
            specs.append(between(f"{stat}.{c.name}", 0, round(1 - c.mostly, 9)))
            labels[f"{stat}.{c.name}"] = f"{owner}: {label}"
    return specs, labels


def _expectations(source: RawSource, frame: Any, span: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The expectation on each statistic column of ``frame`` and the label a failure is reported under."""
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
    for rule in source.rules:
        specs.append(between(f"broken.{rule.name}", 0, rule.max_share))
        labels[f"broken.{rule.name}"] = f"{source.name}: share of rows breaking '{rule.says}'"
    for c in source.columns:
        more, named = column_checks(source.name, c, frame.columns)
        specs += more
        labels |= named
        if not more:
            continue
        if c.std_per_day is not None and f"std.{c.name}" in frame:
            specs.append(between(f"std.{c.name}", *c.std_per_day))
            labels[f"std.{c.name}"] = f"{source.name}: standard deviation of {c.name} (wrong units?)"
        if c.max_shift_from_neighbours is not None and f"shift.{c.name}" in frame:
            specs.append(between(f"shift.{c.name}", 0, c.max_shift_from_neighbours))
            labels[f"shift.{c.name}"] = (
                f"{source.name}: distance of the day's mean {c.name} from its neighbours' (wrong units?)"
            )
    return specs, labels
