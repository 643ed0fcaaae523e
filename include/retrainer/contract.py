"""The data contract: one declarative description of a workload's feature table.

The Spark output schema, the Great Expectations suites and the Keras model's input dtypes (hence
the SavedModel's serving signature) come from the views below; the MLflow signature's inputs are built
from ``features`` in ``stages/register.py``. One declaration, so they cannot disagree.
Pure Python on purpose: importing it costs nothing and needs no engine.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
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
        """The column-level Great Expectations suite as (type, kwargs) dicts, GX-free so it is testable."""
        gx_types = {
            DType.STRING: ["StringType"],
            DType.INT64: ["LongType", "IntegerType"],
            DType.FLOAT64: ["DoubleType", "FloatType"],
            DType.DATE: ["DateType"],
        }
        out: list[dict[str, Any]] = [
            {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": self.names, "exact_match": True}}
        ]
        for c in self.columns:
            out.append({"type": "expect_column_to_exist", "kwargs": {"column": c.name}})
            out.append(
                {
                    "type": "expect_column_values_to_be_in_type_list",
                    "kwargs": {"column": c.name, "type_list": gx_types[c.dtype]},
                }
            )
            if not c.nullable:
                out.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c.name}})
            if c.min_value is not None or c.max_value is not None:
                out.append(
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {
                            "column": c.name,
                            "min_value": c.min_value,
                            "max_value": c.max_value,
                            "mostly": c.mostly,
                        },
                    }
                )
            if c.categories is not None:
                out.append(
                    {
                        "type": "expect_column_values_to_be_in_set",
                        "kwargs": {"column": c.name, "value_set": list(c.categories), "mostly": c.mostly},
                    }
                )
            if c.regex is not None:
                out.append(
                    {
                        "type": "expect_column_values_to_match_regex",
                        "kwargs": {"column": c.name, "regex": c.regex, "mostly": c.mostly},
                    }
                )
        label = self.label.name
        out.append(
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {
                    "column": label,
                    "min_value": self.table.min_label_mean,
                    "max_value": self.table.max_label_mean,
                },
            }
        )
        return out

    def daily_expectations(self, days: Sequence[str]) -> list[dict[str, Any]]:
        """Suite over the per-day row counts: every day present, each within bounds."""
        return [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "date", "value_set": list(days)}},
            {"type": "expect_table_row_count_to_equal", "kwargs": {"value": len(days)}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {
                    "column": "rows",
                    "min_value": self.table.min_rows_per_day,
                    "max_value": self.table.max_rows_per_day,
                },
            },
        ]
