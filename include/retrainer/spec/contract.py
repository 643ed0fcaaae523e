"""The data contract: one declarative description of a workload's feature table.

The Spark output schema, the Great Expectations suites and the Keras model's input dtypes (hence
the SavedModel's serving signature) come from the views below; the MLflow signature's inputs are built
from ``features`` in ``stages/register.py``. One declaration, so they cannot disagree.
Pure Python on purpose: importing it costs nothing and needs no engine.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Sequence
from typing import Any


class Role(enum.StrEnum):
    KEY = "key"  # identifies rows (a date); validated, never a model input
    NUMERIC = "numeric"  # float feature: imputed and normalised inside the model
    CATEGORICAL = "categorical"  # string or integer feature: looked up and embedded inside the model
    LABEL = "label"  # the target; what it means (0/1, minutes, ...) is the workload's objective


class DType(enum.StrEnum):
    STRING = "string"
    INT64 = "int64"
    FLOAT64 = "float64"
    DATE = "date"


class Severity(enum.StrEnum):
    """Great Expectations' failure severities: critical fails the run, warning is recorded and shown."""

    CRITICAL = "critical"
    WARNING = "warning"


@dataclasses.dataclass(frozen=True)
class DriftRule:
    """Population stability index (PSI) bounds for a feature, between this run's training split and the
    champion's. Above ``warning`` the run records a warning; above ``critical`` (if set) it fails."""

    warning: float = 0.25
    critical: float | None = None

    def __post_init__(self) -> None:
        if self.critical is not None and self.critical < self.warning:
            raise ValueError(f"drift: critical {self.critical} is below warning {self.warning}")


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    dtype: DType
    role: Role
    nullable: bool = False
    min_value: float | None = None
    max_value: float | None = None
    categories: tuple[str, ...] | tuple[int, ...] | None = None
    regex: str | None = None
    # Fraction of rows that must satisfy range/category checks (sensor glitches in real data).
    mostly: float = 1.0
    description: str = ""
    # Per day: the largest share of nulls (nullable columns), checked on every day of the run.
    max_null_fraction_per_day: float | None = None
    # True when the value rules hold by construction (derived by a total function, e.g. month from a
    # valid date): still checked, but reported apart from the checks that could have failed.
    by_construction: bool = False
    drift: DriftRule | None = None

    @property
    def is_feature(self) -> bool:
        return self.role in (Role.NUMERIC, Role.CATEGORICAL)


@dataclasses.dataclass(frozen=True)
class TableRules:
    """Checks on the whole split rather than on one column."""

    date_column: str
    min_rows_per_day: int
    max_rows_per_day: int
    # Bounds on the label's mean over the run's rows: a rate for a 0/1 label, a level for a real one.
    min_label_mean: float
    max_label_mean: float
    # The same, for each day on its own: one broken day must not disappear in the window's average.
    min_label_mean_per_day: float
    max_label_mean_per_day: float


@dataclasses.dataclass(frozen=True)
class Contract:
    name: str
    columns: tuple[Column, ...]
    table: TableRules

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"contract {self.name}: duplicate column names in {names}")
        if len(self.by_role(Role.LABEL)) != 1:
            raise ValueError(f"contract {self.name}: exactly one label column is required")
        if self.table.date_column not in names:
            raise ValueError(f"contract {self.name}: date column {self.table.date_column!r} is not a column")

    def by_role(self, *roles: Role) -> list[Column]:
        return [c for c in self.columns if c.role in roles]

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.is_feature]

    @property
    def label(self) -> Column:
        return self.by_role(Role.LABEL)[0]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    # --- derived views ---------------------------------------------------------------------------
    def spark_type_names(self) -> dict[str, str]:
        """Spark SQL type of each column, used to cast the feature table on the way out."""
        mapping = {DType.STRING: "string", DType.INT64: "bigint", DType.FLOAT64: "double", DType.DATE: "date"}
        return {c.name: mapping[c.dtype] for c in self.columns}

    def serving_dtypes(self) -> dict[str, str]:
        """TensorFlow dtype name of each model input: what the SavedModel's signature accepts."""
        mapping = {DType.STRING: "string", DType.INT64: "int64", DType.FLOAT64: "float32"}
        return {c.name: mapping[c.dtype] for c in self.features}

    def expectations(self) -> list[dict[str, Any]]:
        """The feature table's Great Expectations suite as (type, kwargs, meta) dicts, GX-free so it is testable.

        Column existence and types are one check (the stage casts to the contract, so it holds by
        construction); checks that hold by construction carry ``meta.by_construction`` and are counted apart.
        """
        label = self.label
        out: list[dict[str, Any]] = [
            expectation_spec(
                "expect_table_columns_to_match_set", by_construction=True, column_set=self.names, exact_match=True
            )
        ]
        for c in self.columns:
            # The label's nulls are filtered out and the key is the filtered date: neither can be null.
            built = c.by_construction or c.role == Role.KEY
            if not c.nullable:
                out.append(
                    expectation_spec(
                        "expect_column_values_to_not_be_null", by_construction=built or c is label, column=c.name
                    )
                )
            if c.min_value is not None or c.max_value is not None:
                bounds = {"min_value": c.min_value, "max_value": c.max_value, "mostly": c.mostly}
                out.append(
                    expectation_spec(
                        "expect_column_values_to_be_between", by_construction=built, column=c.name, **bounds
                    )
                )
            if c.categories is not None:
                out.append(
                    expectation_spec(
                        "expect_column_values_to_be_in_set",
                        by_construction=built,
                        column=c.name,
                        value_set=list(c.categories),
                        mostly=c.mostly,
                    )
                )
            if c.regex is not None:
                out.append(
                    expectation_spec(
                        "expect_column_values_to_match_regex", column=c.name, regex=c.regex, mostly=c.mostly
                    )
                )
        out.append(
            expectation_spec(
                "expect_column_mean_to_be_between",
                column=label.name,
                min_value=self.table.min_label_mean,
                max_value=self.table.max_label_mean,
            )
        )
        return out

    def per_day_expectations(self, days: Sequence[str]) -> list[dict[str, Any]]:
        """Suite over the per-day profile (one row per day: ``rows``, ``label_mean``, ``null_fraction.<col>``).

        Every day present, and each day on its own within the contract's bounds.
        """
        t = self.table
        between = "expect_column_values_to_be_between"
        out = [
            expectation_spec("expect_column_values_to_be_in_set", column="date", value_set=list(days)),
            expectation_spec("expect_table_row_count_to_equal", value=len(days)),
            expectation_spec(between, column="rows", min_value=t.min_rows_per_day, max_value=t.max_rows_per_day),
            expectation_spec(between, column="label_mean", min_value=t.min_label_mean_per_day,
                             max_value=t.max_label_mean_per_day),
        ]  # fmt: skip
        for c in self.columns:
            if c.nullable and c.max_null_fraction_per_day is not None:
                out.append(
                    expectation_spec(
                        "expect_column_values_to_be_between",
                        column=f"{NULL_FRACTION}{c.name}",
                        min_value=0.0,
                        max_value=c.max_null_fraction_per_day,
                    )
                )
        return out

    def nullable_checked_per_day(self) -> list[str]:
        return [c.name for c in self.columns if c.nullable and c.max_null_fraction_per_day is not None]

    def drift_expectations(self, only: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Suite over one row of PSI values (``psi.<feature>``): a warning and, where set, a critical bound;
        ``only``: the features that were compared (a feature the champion's profile lacks has no PSI)."""
        out = []
        for c in self.features:
            if c.drift is None or (only is not None and c.name not in only):
                continue
            column = f"{PSI}{c.name}"
            out.append(
                expectation_spec("expect_column_values_to_be_between", severity=Severity.WARNING, column=column,
                                 min_value=0.0, max_value=c.drift.warning)
            )  # fmt: skip
            if c.drift.critical is not None:
                out.append(
                    expectation_spec("expect_column_values_to_be_between", severity=Severity.CRITICAL,
                                     column=column, min_value=0.0, max_value=c.drift.critical)
                )  # fmt: skip
        return out


NULL_FRACTION = "null_fraction."
PSI = "psi."


def expectation_spec(
    type_: str, *, by_construction: bool = False, severity: Severity = Severity.CRITICAL, **kwargs: Any
) -> dict[str, Any]:
    return {
        "type": type_,
        "kwargs": kwargs,
        "severity": str(severity),
        "meta": {"by_construction": by_construction},
    }
