"""Features shared by the NYC 2013 flight workloads: what is known about a flight before it departs.

The calendar and schedule, the route, the weather at the origin at the scheduled hour, the plane,
and late-arrival rates of the carrier and the origin over the 7 days strictly before the flight's day.
Each workload adds its own label from ``arr_delay`` (NA for flights that did not arrive: cancelled or
diverted; those rows get a null label and the features stage excludes and counts them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from retrainer.contract import Column, DType, Role

if TYPE_CHECKING:
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame

    from retrainer.spark_io import RawReader

LATE_MINUTES = 15
LAG_DAYS = 7
DAILY_SOURCES = ("flights", "weather")
DIMENSIONS = ("planes",)
CARRIERS = ("9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV")

FEATURE_COLUMNS: tuple[Column, ...] = (
    Column("flight_date", DType.DATE, Role.KEY, description="local date of the scheduled departure"),
    Column("month", DType.INT64, Role.CATEGORICAL, min_value=1, max_value=12, categories=tuple(range(1, 13))),
    Column(
        "day_of_week", DType.INT64, Role.CATEGORICAL, min_value=1, max_value=7, categories=tuple(range(1, 8)),
        description="1 = Sunday ... 7 = Saturday",
    ),
    Column(
        "sched_dep_hour", DType.INT64, Role.CATEGORICAL, min_value=0, max_value=23, categories=tuple(range(24)),
        description="local hour of scheduled departure",
    ),
    Column("carrier", DType.STRING, Role.CATEGORICAL, categories=CARRIERS),
    Column("origin", DType.STRING, Role.CATEGORICAL, categories=("EWR", "JFK", "LGA")),
    Column("dest", DType.STRING, Role.CATEGORICAL, regex=r"^[A-Z0-9]{3}$"),
    Column("distance", DType.FLOAT64, Role.NUMERIC, min_value=10, max_value=6000, description="miles"),
    Column(
        "temp", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=-30, max_value=120, mostly=0.99,
        description="deg F at origin, scheduled hour",
    ),
    Column("humid", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=100, mostly=0.99),
    Column(
        "wind_speed", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=100, mostly=0.99,
        description="mph",
    ),
    Column("precip", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=5, mostly=0.99),
    Column("pressure", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=950, max_value=1070, mostly=0.99),
    Column("visib", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=10, mostly=0.99),
    Column(
        "plane_age", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=80,
        description="years since manufacture; null for planes missing from planes.csv",
    ),
    Column("seats", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=1, max_value=1000),
    Column(
        "carrier_late_rate_7d", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=1,
        description="carrier's share of late arrivals over the previous 7 days",
    ),
    Column(
        "origin_late_rate_7d", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=1,
        description="origin airport's share of late arrivals over the previous 7 days",
    ),
)  # fmt: skip

# Raw columns read (and therefore required) from each source, with their types.
FLIGHTS_COLUMNS = {
    "year": "int",
    "month": "int",
    "day": "int",
    "sched_dep_time": "int",
    "arr_delay": "double",
    "carrier": "string",
    "tailnum": "string",
    "origin": "string",
    "dest": "string",
    "distance": "double",
    "time_hour": "timestamp",
}
WEATHER_COLUMNS = {
    "origin": "string",
    "time_hour": "timestamp",
    "temp": "double",
    "humid": "double",
    "wind_speed": "double",
    "precip": "double",
    "pressure": "double",
    "visib": "double",
}
WEATHER_MEASURES = [c for c in WEATHER_COLUMNS if c not in ("origin", "time_hour")]
PLANES_COLUMNS = {"tailnum": "string", "year": "int", "seats": "double"}


def build_rows(
    reader: RawReader, start: dt.date, end: dt.date, raw_days: Sequence[dt.date], label: SparkColumn, label_name: str
) -> DataFrame:
    """Feature rows for flights scheduled on days in [start, end), plus ``label`` (an expression over
    the raw flight columns, null when the flight did not arrive) as ``label_name``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # try_: an impossible (year, month, day) becomes null and is named below, instead of an ANSI crash.
    midnight = F.lit(0)
    flights = reader.daily("flights", raw_days, FLIGHTS_COLUMNS).withColumn(
        "flight_date", F.to_date(F.try_make_timestamp_ntz("year", "month", "day", midnight, midnight, midnight))
    )
    reader.require_rows_in_partition(flights, F.col("flight_date"), "flights", "year, month, day")
    weather = (
        reader.daily("weather", raw_days, WEATHER_COLUMNS)
        .groupBy("origin", "time_hour")  # guard against duplicate readings for one hour
        .agg(*[F.avg(c).alias(c) for c in WEATHER_MEASURES])
    )
    planes = reader.dim("planes", PLANES_COLUMNS).withColumnRenamed("year", "plane_year").dropDuplicates(["tailnum"])

    # Late rates over the 7 days strictly before each flight's day, from flights that arrived.
    day_num = F.datediff("flight_date", F.lit("1970-01-01").cast("date"))
    arrived = flights.where(F.col("arr_delay").isNotNull()).withColumn(
        "late", (F.col("arr_delay") > LATE_MINUTES).cast("long")
    )

    def lagged_rate(key: str, name: str) -> DataFrame:
        daily = arrived.groupBy(key, "flight_date").agg(F.sum("late").alias("late"), F.count("*").alias("n"))
        w = Window.partitionBy(key).orderBy(day_num).rangeBetween(-LAG_DAYS, -1)
        return daily.select(key, "flight_date", (F.sum("late").over(w) / F.sum("n").over(w)).alias(name))

    rows = (
        flights.where((F.col("flight_date") >= F.lit(start)) & (F.col("flight_date") < F.lit(end)))
        .join(weather, ["origin", "time_hour"], "left")
        .join(planes, ["tailnum"], "left")
        .join(lagged_rate("carrier", "carrier_late_rate_7d"), ["carrier", "flight_date"], "left")
        .join(lagged_rate("origin", "origin_late_rate_7d"), ["origin", "flight_date"], "left")
    )
    return rows.select(
        "flight_date",
        "month",
        F.dayofweek("flight_date").alias("day_of_week"),
        F.floor(F.col("sched_dep_time") / 100).alias("sched_dep_hour"),
        "carrier",
        "origin",
        "dest",
        "distance",
        *WEATHER_MEASURES,
        F.when(F.col("plane_year").isNotNull(), F.col("year") - F.col("plane_year")).alias("plane_age"),
        "seats",
        "carrier_late_rate_7d",
        "origin_late_rate_7d",
        label.alias(label_name),
    )
