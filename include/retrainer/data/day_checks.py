"""The feature table's row-level checks, run once per stored day and kept beside that day's rows.

Why: validation used to run every expectation of the feature table over the whole window, in Spark, on
every run, so a daily run re-checked the 27 days it had checked the day before, one Great Expectations
metric query after another. The table's expectations are counts (rows not null, between bounds, in a
set, matching a pattern, each with its ``mostly``) and a mean, and counts add up: each day's labelled
rows are validated once by Great Expectations (on pandas, uncached days in batches), and what the
window needs from the day (its rows, the label's sum, and per expectation the values it checked, how
many failed and a few of them) is cached in the day's folder of the feature store, keyed by the digest
of the day's rows and the digest of the suite. Then the window's verdicts are Great Expectations
checks over one row of shares computed from those counts (``window_suite``): the same verdicts as the
whole table gave, and a failure names the days, the column, the check and example values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from retrainer.core import atomic
from retrainer.core.fingerprint import dict_fingerprint
from retrainer.data.feature_store import day_digest
from retrainer.spec.contract import Contract

log = logging.getLogger(__name__)
CHECKS_FILE = "_checks.json"
MAX_BATCH_DAYS = 31  # uncached days validated by one Great Expectations run (memory stays a month's rows)
EXAMPLES = 5  # failing values kept per day and expectation
COLUMNS_MATCH = "expect_table_columns_to_match_set"
COLUMN_MEAN = "expect_column_mean_to_be_between"
COLUMN_MAP = (  # expectations over each value of a column: their failures are counts that add up
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_match_regex",
)


@dataclasses.dataclass(frozen=True)
class DayCounts:
    """What the window's checks need from one day: ``checks[i]`` belongs to the suite's ``i``-th expectation
    and holds ``checked`` (values it applied to), ``unexpected`` (values that failed) and ``examples``."""

    day: str
    digest: str  # of the day's rows (their Parquet data pages)
    suite: str  # digest of the expectations and the Great Expectations version that checked them
    rows: int  # labelled rows
    checks: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class DayChecks:
    """The counts of every day of a window, and which of them were computed now."""

    days: dict[str, DayCounts]
    checked: list[str]  # days validated by this call (the others were cached and current)

    @property
    def reused(self) -> int:
        return len(self.days) - len(self.checked)


def suite_digest(specs: Sequence[Mapping[str, Any]]) -> str:
    return dict_fingerprint({"specs": list(specs), "gx": metadata.version("great_expectations")})[:16]


def check_days(folders: Mapping[str, Path], contract: Contract, specs: list[dict[str, Any]]) -> DayChecks:
    """Counts for every day of ``folders`` (ISO day -> the feature store's folder of that day): cached ones
    whose rows and suite are unchanged are read back, the others are validated now and cached."""
    unsupported = sorted({s["type"] for s in specs} - {COLUMNS_MATCH, COLUMN_MEAN, *COLUMN_MAP})
    if unsupported:
        raise ValueError(f"the feature table's suite has expectations that are not per-day counts: {unsupported}")
    suite = suite_digest(specs)
    found: dict[str, DayCounts] = {}
    missing: dict[str, str] = {}
    for day, folder in folders.items():
        digest = day_digest(folder)
        cached = _cached(folder / CHECKS_FILE, digest, suite)
        if cached is None:
            missing[day] = digest
        else:
            found[day] = cached
    if missing:
        validator = _Validator(contract, specs, suite)
        order = sorted(missing)
        for start in range(0, len(order), MAX_BATCH_DAYS):
            batch = {d: missing[d] for d in order[start : start + MAX_BATCH_DAYS]}
            for counts in validator.run({d: folders[d] for d in batch}, batch):
                atomic.write_json(folders[counts.day] / CHECKS_FILE, dataclasses.asdict(counts))
                found[counts.day] = counts
    return DayChecks(days={d: found[d] for d in folders}, checked=sorted(missing))


def _cached(path: Path, digest: str, suite: str) -> DayCounts | None:
    record = atomic.read_record(path)  # missing, empty or damaged: None, and the day is checked again
    if not isinstance(record, dict):
        return None
    try:
        counts = DayCounts(**record)
    except (TypeError, ValueError) as exc:  # written by other code: check the day again
        log.warning("day checks: %s unreadable (%s): checking the day again", path, exc)
        return None
    return counts if (counts.digest, counts.suite) == (digest, suite) else None


class _Validator:
    """One Great Expectations context and validation definition over pandas, reused for every batch."""

    def __init__(self, contract: Contract, specs: list[dict[str, Any]], suite: str) -> None:
        import great_expectations as gx

        from retrainer.data.gx_suites import expectation

        self.contract, self.specs, self.suite = contract, specs, suite
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = {"globally": False}
        batch = ctx.data_sources.add_pandas(name="days").add_dataframe_asset(name="days")
        gx_suite = ctx.suites.add(gx.ExpectationSuite(name=f"{contract.name}.feature_table_per_day"))
        for spec in specs:
            gx_suite.add_expectation(expectation(spec))
        self.definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="days", data=batch.add_batch_definition_whole_dataframe("days"), suite=gx_suite)
        )

    def run(self, folders: Mapping[str, Path], digests: Mapping[str, str]) -> list[DayCounts]:
        frame = self._rows(folders)
        date_col = self.contract.table.date_column
        by_day = {d: frame[frame[date_col] == d] for d in folders}
        if frame.empty:
            results: list[Any] = [None] * len(self.specs)
        else:
            fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": [date_col]}
            results = list(self.definition.run(batch_parameters={"dataframe": frame}, result_format=fmt).results)
        failing = [self._failing_by_day(spec, r) for spec, r in zip(self.specs, results, strict=True)]
        out = []
        for day, rows in by_day.items():
            checks = [
                self._day_part(spec, r, rows, fails.get(day, []))
                for spec, r, fails in zip(self.specs, results, failing, strict=True)
            ]
            out.append(DayCounts(day=day, digest=digests[day], suite=self.suite, rows=len(rows), checks=checks))
        log.info("day checks: %d day(s) validated (%d rows) by Great Expectations", len(folders), len(frame))
        return out

    def _rows(self, folders: Mapping[str, Path]) -> Any:
        """The labelled rows of ``folders``' days as one pandas frame, with the date column (a partition key
        in the store, so not in the files) filled from each folder."""
        import pandas as pd
        import pyarrow.parquet as pq

        date_col, label = self.contract.table.date_column, self.contract.label.name
        frames = []
        for day, folder in folders.items():
            parts = sorted(folder.glob("*.parquet"))
            if parts:
                frame = pq.read_table(parts).to_pandas()
                frames.append(frame.assign(**{date_col: day}))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in self.contract.names})
        frame = pd.concat(frames, ignore_index=True)
        frame = frame[frame[label].notna()]
        return frame[[c for c in self.contract.names if c in frame.columns]].reset_index(drop=True)

    def _failing_by_day(self, spec: Mapping[str, Any], result: Any) -> dict[str, list[Any]]:
        """A column expectation's failing values over the batch, by day (one pass over GX's list)."""
        if result is None or spec["type"] not in COLUMN_MAP:
            return {}
        res, column = result.result or {}, spec["kwargs"]["column"]
        by_day: dict[str, list[Any]] = {}
        for entry in res.get("unexpected_index_list") or []:
            by_day.setdefault(str(entry.get(self.contract.table.date_column)), []).append(entry[column])
        found = sum(len(v) for v in by_day.values())
        if found != res.get("unexpected_count", 0):  # every failing value must have a day
            raise RuntimeError(f"day checks: {spec['type']} on {column}: {found} failing values found by day, "
                               f"GX counted {res.get('unexpected_count')}")  # fmt: skip
        return by_day

    def _day_part(self, spec: Mapping[str, Any], result: Any, rows: Any, failing: list[Any]) -> dict[str, Any]:
        """One day's share of one expectation's result over the batch (``failing``: its values that failed)."""
        kind, column = spec["type"], spec["kwargs"].get("column")
        if kind == COLUMNS_MATCH:
            ok = result is None or result.success
            detail = {} if result is None else (result.result or {}).get("details", {})
            return {"checked": 1, "unexpected": int(not ok), "examples": [] if ok else [_plain(detail)]}
        if kind == COLUMN_MEAN:
            values = rows[column].dropna()
            return {"checked": len(values), "unexpected": 0, "examples": [], "sum": float(values.sum())}
        if result is None:
            return {"checked": 0, "unexpected": 0, "examples": []}
        res = result.result or {}
        # Columns checks skip missing values (GX reports them as missing_count); not-null checks count them.
        skipped = int(rows[column].isna().sum()) if "missing_count" in res else 0
        return {
            "checked": len(rows) - skipped,
            "unexpected": len(failing),
            "examples": [_plain(v) for v in failing[:EXAMPLES]],
        }


def _plain(value: Any) -> Any:
    """A JSON-able form of a value pandas or numpy handed back (NaN as None)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# --- the window: one row of shares over the days' counts, checked by Great Expectations -------------------

_FAILING = {
    "expect_column_values_to_not_be_null": ("null", "null share of {}"),
    "expect_column_values_to_be_between": ("out_of_bounds", "share of {} values out of bounds"),
    "expect_column_values_to_be_in_set": ("not_in_set", "share of {} values not in the set"),
    "expect_column_values_to_match_regex": ("not_matching", "share of {} values not matching the pattern"),
}
MAX_DAYS_NAMED = 5


@dataclasses.dataclass(frozen=True)
class WindowSuite:
    """The feature table's checks over a window, as a suite over one row (``row_key``: the window)."""

    frame: Any  # pandas.DataFrame, one row
    specs: list[dict[str, Any]]
    labels: dict[str, str]
    notes: dict[tuple[str, str], str]
    row_key: str = "window"


def window_suite(checks: DayChecks, specs: list[dict[str, Any]], window: str) -> WindowSuite:
    """Each expectation of the table suite as a bound on one number over the window: the share of values
    that failed (at most ``1 - mostly``, as Great Expectations decides ``mostly``), the column's mean, the
    days whose columns differ. The bounds keep the expectation's severity and by-construction mark."""
    import pandas as pd

    from retrainer.spec.contract import Severity, expectation_spec

    days = list(checks.days.values())
    row: dict[str, Any] = {"window": window}
    out, labels, notes = [], {}, {}
    for i, spec in enumerate(specs):
        kind, kwargs, meta = spec["type"], spec["kwargs"], spec.get("meta", {})
        parts = [(d.day, d.checks[i]) for d in days]
        checked = sum(p["checked"] for _, p in parts)
        bounds: dict[str, Any]
        if kind == COLUMNS_MATCH:
            key, labels[key] = "days_with_other_columns", "days whose columns differ from the contract"
            row[key], bounds = sum(p["unexpected"] for _, p in parts), {"min_value": 0, "max_value": 0}
        elif kind == COLUMN_MEAN:
            key = f"mean.{kwargs['column']}"
            labels[key] = f"mean of {kwargs['column']}"
            row[key] = sum(p["sum"] for _, p in parts) / checked if checked else None
            bounds = {"min_value": kwargs.get("min_value"), "max_value": kwargs.get("max_value")}
        else:
            name, label = _FAILING[kind]
            key, labels[key] = f"{name}.{kwargs['column']}", label.format(kwargs["column"])
            row[key] = sum(p["unexpected"] for _, p in parts) / checked if checked else 0.0
            bounds = {"min_value": 0.0, "max_value": round(1.0 - float(kwargs.get("mostly", 1.0)), 12)}
        failing = [(day, p) for day, p in parts if p["unexpected"]]
        if failing:
            notes[(window, key)] = _where(failing)
        out.append(
            expectation_spec("expect_column_values_to_be_between", column=key,
                             severity=Severity(spec.get("severity", Severity.CRITICAL)),
                             by_construction=bool(meta.get("by_construction")), **bounds)
        )  # fmt: skip
    return WindowSuite(frame=pd.DataFrame([row]), specs=out, labels=labels, notes=notes)


def _where(failing: list[tuple[str, dict[str, Any]]]) -> str:
    """Which days failed, how many values of how many, and examples, for the failure message."""
    shown = [
        f"{day}: {p['unexpected']} of {p['checked']}, e.g. {', '.join(repr(e) for e in p['examples'])}"
        for day, p in failing[:MAX_DAYS_NAMED]
    ]
    more = len(failing) - MAX_DAYS_NAMED
    return "; ".join(shown) + (f"; and {more} more day(s)" if more > 0 else "")
