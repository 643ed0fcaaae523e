"""Reading landed CSV partitions into Spark without trusting them.

Each file's header is read on its own so that a partition with a missing, extra or reordered
column is read by name, not by position: the missing column becomes nulls (which validation then
names) instead of silently shifting every column after it. Values are cast with ``try_cast`` so a
bad value becomes a null the suite catches, rather than an ANSI cast error deep inside a job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from retrainer.core.errors import BadData
from retrainer.core.layout import raw_dim, raw_partition
from retrainer.spec.raw_contract import RawSource

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

K = TypeVar("K")

FILE_COLUMN = "_source_file"  # each daily row's file, for checks that must name it; dropped before output


def read_headers(spark: SparkSession, files: Mapping[K, str]) -> dict[K, list[str]]:
    """The first line of each file, in one Spark job, so it works for local, HDFS or object stores and
    through Spark Connect (a DataFrame read; nothing reaches into the JVM). Only the first lines travel
    back to this process.

    Normalised: a UTF-8 byte-order mark, surrounding quotes and spaces are removed (Spark reads the rows
    of such files correctly; only the header names would be wrong), and a CR before the line break. An
    empty file has no header (``[]``).
    """
    from pyspark.sql import functions as F

    if not files:
        return {}
    first_lines = (
        spark.read.text(list(files.values()), wholetext=True)
        .select(F.col("_metadata.file_path").alias("path"), F.substring_index("value", "\n", 1).alias("line"))
        .collect()
    )
    by_path = {_local_path(r["path"]): r["line"] for r in first_lines}
    out: dict[K, list[str]] = {}
    for key, uri in files.items():
        line = (by_path.get(_local_path(uri)) or "").removesuffix("\r")
        names = [h.strip().strip('"').strip() for h in line.removeprefix("\ufeff").split(",")] if line else []
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise BadData(f"{uri}: duplicate column name(s) {duplicated} in the header {names}")
        out[key] = names
    return out


def _local_path(uri: str) -> str:
    """A file's path without its scheme, as Spark reports it (``file:/x``, ``file:///x``) or as given."""
    from urllib.parse import unquote, urlparse

    return os.path.normpath(unquote(urlparse(uri).path) if "://" in uri or uri.startswith("file:") else uri)


DAY_COLUMN = "_partition_day"  # the day of the partition a row was read from
PROBLEM_COLUMN = "_problem"  # why a row cannot be used (malformed line, unparseable value); null if it can
LINE_COLUMN = "_line"  # the row as text, for the quarantine file
_CORRUPT = "_corrupt_record"


def read_daily_rows(
    spark: SparkSession,
    source: RawSource,
    files: Mapping[dt.date, str],
    headers: Mapping[dt.date, list[str]] | None = None,
) -> DataFrame:
    """Rows of ``source``'s landed files with every contract column typed, and for each row its file,
    its partition's day and, if it cannot be used, why.

    Read by header name, never by position: a missing column becomes nulls (the gate names it), an
    extra one is ignored. A line with the wrong number of fields is malformed; a value that does not
    parse as its column's type is unparseable; either way the row is flagged, never silently dropped
    or turned into a plausible null. Empty files (no header) contribute no rows. ``headers`` are the
    files' headers when the caller has already read them (:func:`read_headers`).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    types = source.types
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    headers = headers if headers is not None else read_headers(spark, files)
    for day, uri in files.items():
        header = headers[day]
        if header:
            groups[tuple(header)].append(uri)
    frames = []
    for header, uris in groups.items():
        schema = StructType([StructField(h, StringType()) for h in (*header, _CORRUPT)])
        df = spark.read.csv(
            uris, schema=schema, header=True, nullValue="NA", enforceSchema=True, mode="PERMISSIVE",
            columnNameOfCorruptRecord=_CORRUPT,
        )  # fmt: skip
        present = [c for c in types if c in header]
        problems = [F.when(F.col(_CORRUPT).isNotNull(), F.lit("malformed line"))] + [
            F.when(
                F.col(c).isNotNull() & F.col(c).try_cast(t).isNull(),
                F.concat(F.lit(f"{c} is not {t}: "), F.substring(F.col(c), 1, 40)),
            )
            for c, t in types.items()
            if c in present and t != "string"
        ]
        frames.append(
            df.select(
                *[(F.col(c).try_cast(t) if c in header else F.lit(None).cast(t)).alias(c) for c, t in types.items()],
                F.col("_metadata.file_path").alias(FILE_COLUMN),
                F.to_date(F.regexp_extract(F.col("_metadata.file_path"), r"date=(\d{4}-\d{2}-\d{2})", 1)).alias(
                    DAY_COLUMN
                ),
                F.nullif(F.concat_ws("; ", *problems), F.lit("")).alias(PROBLEM_COLUMN),
                F.coalesce(
                    F.col(_CORRUPT), F.concat_ws(",", *[F.coalesce(F.col(h), F.lit("NA")) for h in header])
                ).alias(LINE_COLUMN),
            )
        )
    if not frames:
        schema = ", ".join(f"`{c}` {t}" for c, t in types.items())
        return spark.createDataFrame(
            [], f"{schema}, {FILE_COLUMN} string, {DAY_COLUMN} date, {PROBLEM_COLUMN} string, {LINE_COLUMN} string"
        )
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out


@dataclasses.dataclass
class RawReader:
    """Reads a run's raw inputs for the features stage: only rows the raw gate did not quarantine."""

    spark: SparkSession
    data_root: str

    def daily(self, source: RawSource, days: Sequence[dt.date]) -> DataFrame:
        """Union of the daily partitions of ``source`` with the contract's columns, typed."""
        from pyspark.sql import functions as F

        files = {day: str(raw_partition(self.data_root, source.name, day)) for day in days}
        rows = read_daily_rows(self.spark, source, files)
        return rows.where(F.col(PROBLEM_COLUMN).isNull()).select(*source.types)

    def dim(self, name: str, types: Mapping[str, str]) -> DataFrame:
        from pyspark.sql import functions as F

        uri = str(raw_dim(self.data_root, name))
        df = self.spark.read.csv(uri, header=True, nullValue="NA", inferSchema=False)
        missing = [c for c in types if c not in df.columns]
        if missing:
            raise ValueError(f"dimension table {uri} lacks column(s) {missing}; found {df.columns}")
        return df.select(*[F.col(c).try_cast(t).alias(c) for c, t in types.items()])
