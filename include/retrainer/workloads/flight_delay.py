"""Flight delay: will a flight from NYC (2013) arrive more than 15 minutes late? (binary classification)

Features are the shared NYC flight features (``_nyc_flights``); the label is ``arr_delay > 15``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from retrainer.spec.contract import Column, Contract, DType, Role, TableRules
from retrainer.spec.model_spec import WIDE_AND_DEEP_ENSEMBLE
from retrainer.spec.objectives import BinaryClassification
from retrainer.workloads import Workload
from retrainer.workloads import _nyc_flights as nyc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from retrainer.spark.raw_reader import RawReader

CONTRACT = Contract(
    name="flight_delay",
    columns=(
        *nyc.FEATURE_COLUMNS,
        Column(
            "is_late",
            DType.INT64,
            Role.LABEL,
            categories=(0, 1),
            by_construction=True,
            description=f"arr_delay > {nyc.LATE_MINUTES}, cast from a boolean",
        ),
    ),
    # Per day, 2013's late rate ranges from 0.04 to 0.79: a day outside [0.01, 0.9] is a feed problem.
    table=TableRules(
        date_column="flight_date",
        min_rows_per_day=200,
        max_rows_per_day=1500,
        min_label_mean=0.02,
        max_label_mean=0.8,
        min_label_mean_per_day=0.01,
        max_label_mean_per_day=0.9,
    ),  # fmt: skip
)


def build_features(reader: RawReader, start: dt.date, end: dt.date, raw_days: Sequence[dt.date]) -> DataFrame:
    from pyspark.sql import functions as F

    return nyc.build_rows(reader, start, end, raw_days, (F.col("arr_delay") > nyc.LATE_MINUTES).cast("long"), "is_late")


WORKLOAD = Workload(
    name="flight_delay",
    registered_model="flight_delay",
    contract=CONTRACT,
    objective=BinaryClassification(),
    raw=nyc.RAW_CONTRACT,
    dimensions=nyc.DIMENSIONS,
    history_days=nyc.LAG_DAYS,
    build_features=build_features,
    model=WIDE_AND_DEEP_ENSEMBLE,  # the three-member ensemble (spec/model_spec.py)
    slices=nyc.SLICES,
)
