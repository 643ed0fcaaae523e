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

from retrainer.layout import raw_dim, raw_partition

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def read_header(spark: SparkSession, uri: str) -> list[str]:
    """First line of a file through Hadoop's FileSystem, so it works for local, HDFS or object stores."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(fs.open(path), "UTF-8"))
    try:
        line = reader.readLine() or ""
    finally:
        reader.close()
    return [h.strip().strip('"') for h in line.split(",")] if line else []


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
                    *[(F.col(c).try_cast(t) if c in header else F.lit(None).cast(t)).alias(c) for c, t in types.items()]
                )
            )
        out = frames[0]
        for df in frames[1:]:
            out = out.unionByName(df)
        return out

    def dim(self, name: str, types: Mapping[str, str]) -> DataFrame:
        from pyspark.sql import functions as F

        uri = str(raw_dim(self.data_root, name))
        df = self.spark.read.csv(uri, header=True, nullValue="NA", inferSchema=False)
        missing = [c for c in types if c not in df.columns]
        if missing:
            raise ValueError(f"dimension table {uri} lacks column(s) {missing}; found {df.columns}")
        return df.select(*[F.col(c).try_cast(t).alias(c) for c, t in types.items()])
