"""The raw gate's check of a dimension table (``raw/dims/<name>.csv``), read whole with pandas.

A dimension table is reference data joined by every day's features (the planes: a few thousand rows), so
it is read whole on every run rather than scanned by Spark and cached. Its statistics are those of a landed
day (columns, values that do not parse, nulls, ranges, categories, duplicate keys), bounded by the same
expectations, in a one-row table keyed by the file: a failure names the file, the column and the check.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from retrainer.data.gx_suites import Suite
from retrainer.data.raw_gate_suite import between, column_checks
from retrainer.spec.raw_contract import RawColumn, RawDimension

NULL_TEXT = ("", "NA")  # how the landed CSVs write a missing value


def _parsed(text: Any, column: RawColumn) -> tuple[Any, Any]:
    """(the column's values parsed as its type, the mask of non-null text that does not parse)."""
    import pandas as pd

    present = ~text.isin(NULL_TEXT)
    if column.dtype in ("int", "bigint", "double", "float"):
        values = pd.to_numeric(text.where(present), errors="coerce")
        bad = present & values.isna()
        if column.dtype in ("int", "bigint"):
            fractional = values.notna() & (values % 1 != 0)
            bad, values = bad | fractional, values.where(~fractional)
        return values, bad
    return text.where(present), present & False


def dimension_record(path: Path, dimension: RawDimension) -> dict[str, Any]:
    """What the gate bounds about one dimension table, examples for its failure messages, and the SHA-256 of
    the bytes it read (read once: the digest is of what was checked, whatever lands after)."""
    import pandas as pd

    data = path.read_bytes()
    malformed: list[list[str]] = []

    def keep_aside(fields: list[str]) -> None:  # a line with more fields than the header: counted, not parsed
        malformed.append(fields)

    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            engine="python", on_bad_lines=keep_aside)  # fmt: skip
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:  # no header to check
        frame, unreadable = pd.DataFrame(), f" ({type(exc).__name__}: {str(exc)[:200]})"
    else:
        unreadable = ""
    missing = [c.name for c in dimension.columns if c.name not in frame.columns]
    record: dict[str, Any] = {
        "digest": hashlib.sha256(data).hexdigest(),
        "file": str(path),
        "header": f"{list(frame.columns)}{unreadable}",
        "missing_columns": missing,
        "rows": len(frame),
        "nulls": {},
        "out_of_range": {},
        "unknown": {},
        "non_null": {},
        "examples": {},
    }
    unparsed = pd.Series(False, index=frame.index)
    for c in dimension.columns:
        if c.name in missing:
            continue
        values, bad = _parsed(frame[c.name], c)
        unparsed |= bad
        if bad.any():
            record["examples"][f"unparsed.{c.name}"] = frame.loc[bad, c.name].head(3).tolist()
        record["nulls"][c.name] = int(values.isna().sum() - bad.sum())
        present = values.dropna()
        record["non_null"][c.name] = len(present)
        outside = pd.Series(False, index=present.index)
        if c.min_value is not None:
            outside |= present < c.min_value
        if c.max_value is not None:
            outside |= present > c.max_value
        if c.min_value is not None or c.max_value is not None:
            record["out_of_range"][c.name] = int(outside.sum())
            record["examples"][f"out_of_range.{c.name}"] = present[outside].head(3).tolist()
        if c.categories is not None:
            unknown = ~present.isin(c.categories)
            record["unknown"][c.name] = int(unknown.sum())
            record["examples"][f"unknown_category.{c.name}"] = present[unknown].head(3).tolist()
    record["quarantined"] = int(unparsed.sum()) + len(malformed)
    record["rows"] += len(malformed)
    if malformed:
        record["examples"]["unparsed.(malformed line)"] = [",".join(m)[:200] for m in malformed[:3]]
    key = list(dimension.key)
    record["duplicate_keys"] = 0
    if key and not set(key) & set(missing):  # a missing key column is reported as missing
        repeated = frame.loc[frame.duplicated(subset=key, keep=False), key].drop_duplicates()
        record["duplicate_keys"] = len(repeated)
        if len(repeated):
            record["examples"]["duplicate_keys"] = repeated.head(3).to_dict("records")
    return record


def dimension_suite(dimension: RawDimension, record: dict[str, Any], name: str) -> Suite:
    """A one-row table of ``record``'s statistics (keyed by ``name``, the file as a run names it) and the
    expectations the contract puts on them."""
    import pandas as pd

    n, usable = record["rows"], max(record["rows"] - record["quarantined"], 1)
    row: dict[str, Any] = {
        "file": name,
        "missing_columns": len(record["missing_columns"]),
        "rows": n,
        "quarantined_fraction": record["quarantined"] / n if n else 0.0,
        "duplicate_keys": record["duplicate_keys"],
    }
    examples = record["examples"]
    notes = {
        (name, "missing_columns"): f"lacks {record['missing_columns']}; header {record['header']}",
        (name, "quarantined_fraction"): "; ".join(
            f"{k.split('.', 1)[1]} e.g. {v}" for k, v in examples.items() if k.startswith("unparsed.")
        ),
        (name, "duplicate_keys"): f"e.g. {examples.get('duplicate_keys', [])}",
    }

    specs = [
        between("missing_columns", 0, 0),
        between("rows", dimension.min_rows, None),
        between("quarantined_fraction", 0, dimension.max_quarantined_fraction),
        between("duplicate_keys", 0, 0),
    ]
    labels = {
        "missing_columns": f"{dimension.name}: missing required columns",
        "rows": f"{dimension.name}: rows",
        "quarantined_fraction": f"{dimension.name}: share of rows with a value that does not parse",
        "duplicate_keys": f"{dimension.name}: values of the key {list(dimension.key)} on more than one row",
    }
    for c in dimension.columns:
        if c.name in record["missing_columns"]:
            continue
        non_null = max(record["non_null"][c.name], 1)
        row[f"null_fraction.{c.name}"] = record["nulls"][c.name] / usable
        for stat, counts in (("out_of_range", record["out_of_range"]), ("unknown_category", record["unknown"])):
            if c.name in counts:
                row[f"{stat}.{c.name}"] = counts[c.name] / non_null
                notes[(name, f"{stat}.{c.name}")] = f"e.g. {examples.get(f'{stat}.{c.name}', [])}"
        more, named = column_checks(dimension.name, c, row)
        specs += more
        labels |= named
    return Suite(name=f"dims.{dimension.name}", frame=pd.DataFrame([row]), specs=specs, labels=labels,
                 row_key="file", notes=notes)  # fmt: skip
