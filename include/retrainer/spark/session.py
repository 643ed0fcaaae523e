"""One SparkSession per process, built from the run's master setting.

Locally the master is ``local[*]``; on a cluster the stage runs under ``spark-submit --master ...``
and the session picks up that master (``getOrCreate`` reuses an active session's settings).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from retrainer.core.deployment import deployment

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def get_spark(master: str, app_name: str = "retrainer") -> SparkSession:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder
    settings = deployment()
    # Under spark-submit the JVM is already up (PYSPARK_GATEWAY_PORT is set) with the submitted
    # master and name; setting them here would override them.
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        builder = builder.master(master).appName(app_name)
    return (
        builder.config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.driver.memory", settings.spark_driver_memory)
        .getOrCreate()
    )
