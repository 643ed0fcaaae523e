"""The raw contract: what each landed daily file and dimension table of a workload must satisfy before any
feature is built.

The raw gate (``retrainer.data.raw_gate_suite``) turns it into per-day Great Expectations suites, and the
Spark reader (``retrainer.spark.raw_reader``) into a header-checked, typed read. Apart from the feature
contract because it describes another table (the landed files, not the features) and another gate.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RawColumn:
    """A column of a landed daily file, with per-day bounds checked by the raw gate."""

    name: str
    dtype: str  # the Spark SQL type its text must parse as ("int", "double", "string", "timestamp")
    nullable: bool = True
    max_null_fraction: float = 1.0  # per day
    min_value: float | None = None
    max_value: float | None = None
    categories: tuple[str, ...] | None = None
    mostly: float = 1.0  # share of a day's non-null values that must be within range / categories
    # Units: bounds on the day's standard deviation, and on how far the day's mean may sit from the
    # median of its neighbouring days' means. Both in the column's units: values in other units (hours
    # for minutes, Celsius for Fahrenheit) move them out of bounds while staying in the plausible range.
    std_per_day: tuple[float, float] | None = None
    max_shift_from_neighbours: float | None = None


@dataclasses.dataclass(frozen=True)
class RowRule:
    """A relation between columns that every row of a landed day satisfies: cross-field consistency.

    Ranges, null shares and spreads look at one column at a time, so a value that is wrong but plausible (a
    label shifted by ten minutes, a distance in kilometres, a time zone slipped by an hour) passes them. Upstream
    data usually carries the same fact twice (a delay and the two times it is the difference of); a rule states
    that, and the gate bounds the share of a day's usable rows that break it."""

    name: str  # a statistic name: letters, digits, underscores
    holds: str  # Spark SQL boolean over the parsed columns; NULL (a value missing) counts as holding
    says: str  # what it means, in the failure message: "arr_delay is arr_time - sched_arr_time"
    max_share: float = 0.0  # of a day's usable rows allowed to break it

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"row rule {self.name!r}: use letters, digits and underscores")
        if not 0 <= self.max_share < 1:
            raise ValueError(f"row rule {self.name}: max_share {self.max_share} is not in [0, 1)")


@dataclasses.dataclass(frozen=True)
class RawSource:
    """One daily source (``raw/<name>/date=D/<name>.csv``) and what a landed day of it must satisfy."""

    name: str
    columns: tuple[RawColumn, ...]
    key: tuple[str, ...]  # no two rows of a day share it
    # Spark SQL expressions over the parsed columns; each must give the partition's date for every row.
    row_dates: tuple[str, ...]
    min_rows: int
    max_rows: int
    # A day's rows divided by the median of its neighbouring days' rows (the gate's notion of "recent").
    rows_vs_neighbours: tuple[float, float]
    # Rows that do not parse (malformed lines, unparseable values) are quarantined; above this share the day fails.
    max_quarantined_fraction: float
    rules: tuple[RowRule, ...] = ()  # cross-field consistency of each row

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"raw source {self.name}: duplicate column names in {names}")
        if unknown := [k for k in self.key if k not in names]:
            raise ValueError(f"raw source {self.name}: key columns {unknown} are not columns")
        rule_names = [r.name for r in self.rules]
        if len(set(rule_names)) != len(rule_names):
            raise ValueError(f"raw source {self.name}: duplicate rule names in {rule_names}")

    @property
    def types(self) -> dict[str, str]:
        return {c.name: c.dtype for c in self.columns}

    def column(self, name: str) -> RawColumn:
        return next(c for c in self.columns if c.name == name)


@dataclasses.dataclass(frozen=True)
class RawDimension:
    """A dimension table (``raw/dims/<name>.csv``), landed whole and joined by every day's features.

    The gate reads it whole on every run (reference data: thousands of rows, not millions) and bounds the
    same statistics as a day's (columns, parse failures, nulls, ranges, categories, duplicate keys), so a
    damaged table fails the run before any feature reads it, instead of being joined in silently."""

    name: str
    columns: tuple[RawColumn, ...]  # the columns features read (others may come and go)
    key: tuple[str, ...]  # unique: a join on it must not multiply rows or pick one at random
    min_rows: int
    max_quarantined_fraction: float  # rows with a value that does not parse as its column's type

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if unknown := [k for k in self.key if k not in names]:
            raise ValueError(f"dimension {self.name}: key columns {unknown} are not columns")

    @property
    def types(self) -> dict[str, str]:
        return {c.name: c.dtype for c in self.columns}


@dataclasses.dataclass(frozen=True)
class RawContract:
    """The daily sources and dimension tables a workload reads, and the neighbourhood the relative bounds
    look at."""

    name: str  # names the gate's per-day record, so workloads sharing sources share it
    sources: tuple[RawSource, ...]
    neighbour_days: int = 7  # days on each side whose median is a day's "recent" reference
    dimensions: tuple[RawDimension, ...] = ()
    # A file the landing job writes into a day's partition folder after the day's file (Spark and Hadoop
    # jobs write ``_SUCCESS``): a day counts as landed only with it, so a file still being written, or
    # landed early and partial, is waited for instead of read. "" when the landing writes no marker.
    commit_marker: str = ""

    def source(self, name: str) -> RawSource:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"raw contract {self.name} has no source {name!r}")
