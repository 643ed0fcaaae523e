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

from retrainer.spec.contract import Column, DriftRule, DType, Role
from retrainer.spec.raw_contract import RawColumn, RawContract, RawDimension, RawSource, RowRule
from retrainer.spec.slices import SliceSpec

if TYPE_CHECKING:
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame

    from retrainer.spark.raw_reader import RawReader

LATE_MINUTES = 15
LAG_DAYS = 7
CARRIERS = ("9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV")

# Drift: seasonal features (weather, late rates) only warn; features whose mix should not move with the
# season also fail the run when their PSI against the champion's training data is far out of line.
SEASONAL = DriftRule(warning=0.25)
STABLE = DriftRule(warning=0.25, critical=1.0)


def _weather(
    name: str, low: float, high: float, *, max_null_fraction_per_day: float = 0.3, description: str = ""
) -> Column:
    """A weather measure at the origin and scheduled hour: nullable (hours without a reading), a few
    sensor glitches out of range tolerated, seasonal drift only warns."""
    return Column(
        name, DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=low, max_value=high, mostly=0.99,
        max_null_fraction_per_day=max_null_fraction_per_day, drift=SEASONAL, description=description,
    )  # fmt: skip


FEATURE_COLUMNS: tuple[Column, ...] = (
    Column("flight_date", DType.DATE, Role.KEY, description="local date of the scheduled departure"),
    Column(
        "month", DType.INT64, Role.CATEGORICAL, min_value=1, max_value=12, categories=tuple(range(1, 13)),
        by_construction=True, description="from the row's date, checked by the raw gate",
    ),
    Column(
        "day_of_week", DType.INT64, Role.CATEGORICAL, min_value=1, max_value=7, categories=tuple(range(1, 8)),
        by_construction=True, description="1 = Sunday ... 7 = Saturday",
    ),
    Column(
        "sched_dep_hour", DType.INT64, Role.CATEGORICAL, min_value=0, max_value=23, categories=tuple(range(24)),
        drift=STABLE, description="local hour of scheduled departure",
    ),
    Column("carrier", DType.STRING, Role.CATEGORICAL, categories=CARRIERS, drift=STABLE),
    Column("origin", DType.STRING, Role.CATEGORICAL, categories=("EWR", "JFK", "LGA"), drift=STABLE),
    Column("dest", DType.STRING, Role.CATEGORICAL, regex=r"^[A-Z0-9]{3}$", drift=STABLE),
    Column("distance", DType.FLOAT64, Role.NUMERIC, min_value=10, max_value=6000, drift=STABLE, description="miles"),
    _weather("temp", -30, 120, description="deg F at origin, scheduled hour"),
    _weather("humid", 0, 100),
    _weather("wind_speed", 0, 100, description="mph"),
    _weather("precip", 0, 5),
    _weather("pressure", 950, 1070, max_null_fraction_per_day=0.9),
    _weather("visib", 0, 10),
    Column(
        "plane_age", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=80,
        max_null_fraction_per_day=0.5, drift=STABLE,
        description="years since manufacture; null for planes missing from planes.csv",
    ),
    Column(
        "seats", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=1, max_value=1000,
        max_null_fraction_per_day=0.5, drift=STABLE,
    ),
    Column(
        "carrier_late_rate_7d", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=1,
        max_null_fraction_per_day=0.05, drift=SEASONAL,
        description="carrier's share of late arrivals over the previous 7 days",
    ),
    Column(
        "origin_late_rate_7d", DType.FLOAT64, Role.NUMERIC, nullable=True, min_value=0, max_value=1,
        max_null_fraction_per_day=0.05, drift=SEASONAL,
        description="origin airport's share of late arrivals over the previous 7 days",
    ),
)  # fmt: skip

# --- the slices evaluation compares the new model and the champion on (retrainer.evaluation.slices) -----
# Each origin airport and each carrier, and the scheduled hour in four parts of the day: where delays build up
# differently (the evening's knock-on delays), and where an operator would hear about a worse model first.
HOUR_BUCKETS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("05-09", tuple(range(5, 10))),
    ("10-14", tuple(range(10, 15))),
    ("15-19", tuple(range(15, 20))),
    ("20-04", (20, 21, 22, 23, 0, 1, 2, 3, 4)),
)
SLICES: tuple[SliceSpec, ...] = (
    SliceSpec("origin", "origin"),
    SliceSpec("carrier", "carrier"),
    SliceSpec("sched_hour", "sched_dep_hour", groups=HOUR_BUCKETS),
)

# --- the landed files: what every day of each source must satisfy (the raw gate) -----------------------
# Thresholds were chosen from the 365 days of 2013 with a margin (``bench/thresholds_2013.py`` prints
# each observed per-day extreme next to its bound); the README explains each choice.
ROW_DATE = "to_date(try_make_timestamp_ntz(year, month, day, 0, 0, 0))"
LOCAL_DATE_OF_TIME_HOUR = "to_date(from_utc_timestamp(time_hour, 'America/New_York'))"
ORIGINS = ("EWR", "JFK", "LGA")


def _minutes_apart(actual: str, scheduled: str, delay: str) -> str:
    """Spark SQL: ``delay`` is ``actual - scheduled`` in minutes, the clock times as HHMM, across midnight."""

    def minutes(hhmm: str) -> str:
        return f"(floor({hhmm} / 100) * 60 + {hhmm} % 100)"

    return f"pmod({minutes(actual)} - {minutes(scheduled)} - {delay}, 1440) = 0"


FLIGHTS = RawSource(
    name="flights",
    columns=(
        RawColumn("year", "int", nullable=False),
        RawColumn("month", "int", nullable=False),
        RawColumn("day", "int", nullable=False),
        RawColumn("sched_dep_time", "int", nullable=False, min_value=0, max_value=2359),
        RawColumn(
            "arr_delay",
            "double",
            max_null_fraction=0.75,
            min_value=-180,
            max_value=1800,
            std_per_day=(5.0, 300.0),  # minutes; 2013: 18..103 (in hours: under 2)
        ),
        RawColumn("carrier", "string", nullable=False, categories=CARRIERS),
        RawColumn("flight", "int", nullable=False),
        RawColumn("tailnum", "string", max_null_fraction=0.5),
        RawColumn("origin", "string", nullable=False, categories=ORIGINS),
        RawColumn("dest", "string", nullable=False),
        RawColumn("distance", "double", nullable=False, min_value=10, max_value=6000),
        RawColumn("time_hour", "timestamp", nullable=False),
        # Not features, but the same facts stated twice: the rules below check each row against them.
        RawColumn("hour", "int", nullable=False, min_value=0, max_value=23),
        RawColumn("minute", "int", nullable=False, min_value=0, max_value=59),
        RawColumn("sched_arr_time", "int", nullable=False, min_value=0, max_value=2359),
        RawColumn("dep_time", "int", max_null_fraction=0.75, min_value=1, max_value=2400),  # null: cancelled
        RawColumn("dep_delay", "double", max_null_fraction=0.75),
        RawColumn("arr_time", "int", max_null_fraction=0.75, min_value=1, max_value=2400),
        RawColumn("air_time", "double", max_null_fraction=0.75, min_value=1, max_value=1500),
    ),
    key=("year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"),
    row_dates=(ROW_DATE, LOCAL_DATE_OF_TIME_HOUR),
    min_rows=300,
    max_rows=1500,
    rows_vs_neighbours=(0.5, 1.5),
    max_quarantined_fraction=0.01,
    # Every rule held on every row of 2013 (bench/thresholds_2013.py), except the two with a share: 2013's
    # worst day had 0.14 % of rows above 700 mph and 0.13 % with the tail number D942DN (bench/THRESHOLDS.md).
    rules=(
        RowRule("arr_delay_is_arr_time_minus_scheduled", _minutes_apart("arr_time", "sched_arr_time", "arr_delay"),
                "arr_delay is arr_time - sched_arr_time in minutes"),
        RowRule("dep_delay_is_dep_time_minus_scheduled", _minutes_apart("dep_time", "sched_dep_time", "dep_delay"),
                "dep_delay is dep_time - sched_dep_time in minutes"),
        RowRule("hour_and_minute_are_sched_dep_time", "hour * 100 + minute = sched_dep_time",
                "hour and minute are sched_dep_time"),
        RowRule("time_hour_is_the_scheduled_hour", "hour(from_utc_timestamp(time_hour, 'America/New_York')) = hour",
                "time_hour is the scheduled hour in New York"),
        RowRule("distance_over_air_time_is_a_plane_speed", "air_time <= 0 OR distance / (air_time / 60) <= 700",
                "distance (miles) over air_time (minutes) is at most 700 mph", max_share=0.005),
        RowRule("tailnum_is_an_n_number", "tailnum RLIKE '^N[0-9A-Z]{1,5}$'",
                "tailnum is N and 1-5 letters or digits", max_share=0.01),
        RowRule("dest_is_an_airport_code", "dest RLIKE '^[A-Z]{3}$'", "dest is three capital letters"),
    ),
)  # fmt: skip
WEATHER = RawSource(
    name="weather",
    columns=(
        RawColumn("origin", "string", nullable=False, categories=ORIGINS),
        RawColumn("year", "int", nullable=False),
        RawColumn("month", "int", nullable=False),
        RawColumn("day", "int", nullable=False),
        RawColumn(
            "temp",
            "double",
            max_null_fraction=0.25,
            min_value=-30,
            max_value=120,
            mostly=0.95,
            max_shift_from_neighbours=26.0,  # deg F; 2013: at most 24.4
        ),
        RawColumn("humid", "double", max_null_fraction=0.25, min_value=0, max_value=100, mostly=0.95),
        RawColumn("wind_speed", "double", max_null_fraction=0.25, min_value=0, max_value=100, mostly=0.95),
        RawColumn("precip", "double", max_null_fraction=0.25, min_value=0, max_value=5, mostly=0.95),
        RawColumn("pressure", "double", max_null_fraction=0.9, min_value=950, max_value=1070, mostly=0.95),
        RawColumn("visib", "double", max_null_fraction=0.25, min_value=0, max_value=10, mostly=0.95),
        RawColumn("time_hour", "timestamp", nullable=False),
    ),
    key=("origin", "time_hour"),
    row_dates=(ROW_DATE, LOCAL_DATE_OF_TIME_HOUR),
    min_rows=24,
    max_rows=100,
    rows_vs_neighbours=(0.5, 1.5),
    max_quarantined_fraction=0.05,
)
PLANES = RawDimension(
    name="planes",
    columns=(
        RawColumn("tailnum", "string", nullable=False),
        RawColumn("year", "int", max_null_fraction=0.1, min_value=1940, max_value=2014, mostly=0.99),
        RawColumn("seats", "double", nullable=False, min_value=1, max_value=900, mostly=0.99),
    ),
    key=("tailnum",),
    min_rows=100,
    max_quarantined_fraction=0.01,
)
RAW_CONTRACT = RawContract(
    name="nyc_flights", sources=(FLIGHTS, WEATHER), dimensions=(PLANES,), commit_marker="_SUCCESS"
)  # retrainer land writes each day's _SUCCESS after its file
DIMENSIONS = tuple(d.name for d in RAW_CONTRACT.dimensions)
WEATHER_MEASURES = ["temp", "humid", "wind_speed", "precip", "pressure", "visib"]
PLANES_COLUMNS = PLANES.types


def build_rows(
    reader: RawReader, start: dt.date, end: dt.date, raw_days: Sequence[dt.date], label: SparkColumn, label_name: str
) -> DataFrame:
    """Feature rows for flights scheduled on days in [start, end), plus ``label`` (an expression over
    the raw flight columns, null when the flight did not arrive) as ``label_name``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # The raw gate has already checked every row's date against its partition.
    flights = reader.daily(FLIGHTS, raw_days).withColumn("flight_date", F.expr(ROW_DATE))
    weather = (
        reader.daily(WEATHER, raw_days)
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
