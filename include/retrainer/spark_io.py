"""Reading landed CSV partitions into Spark without trusting them.

Each file's header is read on its own so that a partition with a missing, extra or reordered
column is read by name, not by position: the missing column becomes nulls (which validation then
names) instead of silently shifting every column after it. Values are cast with ``try_cast`` so a
bad value becomes a null the suite catches, rather than an ANSI cast error deep inside a job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from retrainer.errors import BadData
from retrainer.layout import raw_dim, raw_partition

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

FILE_COLUMN = "_source_file"  # each daily row's file, for checks that must name it; dropped before output


def read_header(spark: SparkSession, uri: str) -> list[str]:
    """First line of a file through Hadoop's FileSystem, so it works for local, HDFS or object stores.

    Normalised: a UTF-8 byte-order mark, surrounding quotes and spaces are removed (Spark reads the rows
    of such files correctly; only the header names would be wrong). Line endings are ``readLine``'s.
    """
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(fs.open(path), "UTF-8"))
    try:
        line = reader.readLine() or ""
    finally:
        reader.close()
    names = [h.strip().strip('"').strip() for h in line.removeprefix("\ufeff").split(",")] if line else []
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise BadData(f"{uri}: duplicate column name(s) {duplicated} in the header {names}")
    return names


@dataclasses.dataclass
class RawReader:
    """Reads a run's raw inputs and records, per partition, which expected columns were present."""

    spark: SparkSession
    data_root: str
    manifest: list[dict] = dataclasses.field(default_factory=list)

    def daily(self, source: str, days: Sequence[dt.date], types: Mapping[str, str]) -> DataFrame:
        """Union of the daily partitions of ``source``; columns of ``types`` cast by name, others dropped."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import StringType, StructField, StructType

        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for day in days:
            uri = str(raw_partition(self.data_root, source, day))
            header = read_header(self.spark, uri)
            groups[tuple(header)].append(uri)
            self.manifest.append(
                {
                    "source": source,
                    "date": day.isoformat(),
                    "file": uri,
                    "expected": list(types),
                    "missing": [c for c in types if c not in header],
                }
            )
        frames = []
        for header, uris in groups.items():
            schema = StructType([StructField(h, StringType()) for h in header])
            df = self.spark.read.csv(
                uris, schema=schema, header=True, nullValue="NA", enforceSchema=True, mode="PERMISSIVE"
            )
            frames.append(
                df.select(
                    *[
                        (F.col(c).try_cast(t) if c in header else F.lit(None).cast(t)).alias(c)
                        for c, t in types.items()
                    ],
                    F.col("_metadata.file_path").alias(FILE_COLUMN),
                )
            )
        out = frames[0]
        for df in frames[1:]:
            out = out.unionByName(df)
        return out

    @staticmethod
    def require_rows_in_partition(
        df: DataFrame, row_date: Column, source: str, day_columns: str, limit: int = 5
    ) -> None:
        """Raise :class:`BadData` if any row of ``df`` (from :meth:`daily`) has no valid date or a date
        other than its partition's; the message names each bad file, how many rows and an example."""
        from pyspark.sql import functions as F

        partition_day = F.to_date(F.regexp_extract(F.col(FILE_COLUMN), r"date=(\d{4}-\d{2}-\d{2})", 1))
        bad = (
            df.select(F.col(FILE_COLUMN), row_date.alias("_row_date"), partition_day.alias("_day"))
            .where(F.col("_row_date").isNull() | (F.col("_row_date") != F.col("_day")))
            .groupBy(FILE_COLUMN)
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.first(F.coalesce(F.col("_row_date").cast("string"), F.lit("invalid"))).alias("e"),
            )
            .orderBy(FILE_COLUMN)
            .limit(limit)
            .collect()
        )
        if bad:
            files = "; ".join(f"{r[FILE_COLUMN]}: {r['n']} row(s), e.g. dated {r['e']}" for r in bad)
            raise BadData(
                f"raw {source} rows whose ({day_columns}) is not a valid date or not their partition's day: {files}"
            )

    def dim(self, name: str, types: Mapping[str, str]) -> DataFrame:
        from pyspark.sql import functions as F

        uri = str(raw_dim(self.data_root, name))
        df = self.spark.read.csv(uri, header=True, nullValue="NA", inferSchema=False)
        missing = [c for c in types if c not in df.columns]
        if missing:
            raise ValueError(f"dimension table {uri} lacks column(s) {missing}; found {df.columns}")
        return df.select(*[F.col(c).try_cast(t).alias(c) for c, t in types.items()])
