"""The features stage as a spark-submit application: ``spark-submit .../features_job.py <run config flags>``.

Under spark-submit the JVM is already up with the submitted master, and ``get_spark`` attaches to it.
"""

from __future__ import annotations

import logging
import os
import sys

from retrainer.core.config import ConfigError, RunConfig
from retrainer.core.errors import BadData
from retrainer.core.layout import RunLayout
from retrainer.core.results import RawGateResult
from retrainer.data.features_submission import record_error
from retrainer.stages.features import build_features


def main(argv: list[str]) -> int:
    # This process is a classic driver: a submitter that used Spark Connect passes on pyspark's Connect-mode
    # markers in the environment, which would send every DataFrame call of the job to a Connect client.
    for marker in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE"):
        os.environ.pop(marker, None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    cfg = RunConfig.from_argv(argv)
    try:
        build_features(RunLayout.of(cfg).load(RawGateResult), cfg)
    except (BadData, ConfigError) as exc:
        record_error(cfg, exc)
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
