"""Workloads: everything specific to one prediction problem lives in one module here.

A workload is a :class:`Workload` value: its data contract, the raw inputs it needs and a Spark
function that turns raw partitions into the feature table. A second workload is a new module
registered in :data:`REGISTRY`, not a fork of the stages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from retrainer.contract import Contract
from retrainer.landing import days_between

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from retrainer.spark_io import RawReader

FeatureBuilder = Callable[["RawReader", dt.date, dt.date], "DataFrame"]


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    registered_model: str
    contract: Contract
    daily_sources: tuple[str, ...]
    # Days of raw history before the training window that the features need (lagged rates).
    history_days: int
    # build(reader, start, end) -> feature rows for days in [start, end), columns as in the contract
    build_features: FeatureBuilder
    description: str = ""

    def raw_days(self, first_day: dt.date, end: dt.date) -> list[dt.date]:
        """Every raw partition a run over [first_day, end) reads, history included."""
        return days_between(first_day - dt.timedelta(days=self.history_days), end)


def get_workload(name: str) -> Workload:
    from retrainer.workloads import flight_delay

    registry = {flight_delay.WORKLOAD.name: flight_delay.WORKLOAD}
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {sorted(registry)}") from None
