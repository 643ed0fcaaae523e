"""Arrival delay in minutes: how late will a flight from NYC (2013) arrive? (regression)

The same features as ``flight_delay`` on the same landed data; the label is ``arr_delay`` itself
(negative when early), the loss squared error, and the promotion gate compares RMSE (lower is better).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from retrainer.spec.contract import Column, Contract, DType, Role, TableRules
from retrainer.spec.model_spec import WIDE_AND_DEEP_ENSEMBLE
from retrainer.spec.objectives import Regression
from retrainer.workloads import Workload
from retrainer.workloads import _nyc_flights as nyc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from retrainer.spark.raw_reader import RawReader

CONTRACT = Contract(
    name="arrival_delay_minutes",
    columns=(
        *nyc.FEATURE_COLUMNS,
        # 2013's extremes are -86 and 1272 minutes; a day of values outside this is a unit or feed error.
        Column(
            "arr_delay_minutes",
            DType.FLOAT64,
            Role.LABEL,
            min_value=-120,
            max_value=1500,
            description="arrival delay in minutes (negative: early)",
        ),
    ),  # fmt: skip
    # Per day, 2013's mean arrival delay ranges from -20 to 86 minutes (labelled rows only).
    table=TableRules(
        date_column="flight_date",
        min_rows_per_day=200,
        max_rows_per_day=1500,
        min_label_mean=-30,
        max_label_mean=120,
        min_label_mean_per_day=-45,
        max_label_mean_per_day=180,
    ),  # fmt: skip
)


def build_features(reader: RawReader, start: dt.date, end: dt.date, raw_days: Sequence[dt.date]) -> DataFrame:
    from pyspark.sql import functions as F

    return nyc.build_rows(reader, start, end, raw_days, F.col("arr_delay"), "arr_delay_minutes")


WORKLOAD = Workload(
    name="arrival_delay_minutes",
    registered_model="arrival_delay_minutes",
    contract=CONTRACT,
    objective=Regression(unit="min"),
    raw=nyc.RAW_CONTRACT,
    dimensions=nyc.DIMENSIONS,
    history_days=nyc.LAG_DAYS,
    build_features=build_features,
    model=WIDE_AND_DEEP_ENSEMBLE,  # the three-member ensemble (spec/model_spec.py)
    slices=nyc.SLICES,
)
