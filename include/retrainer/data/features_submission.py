"""The features stage as a Spark application submitted through the Apache Spark provider, so where Spark
runs is an Airflow connection: ``local[*]``, ``spark://host:7077``, YARN, ``k8s://...``.

The application is :mod:`retrainer.runners.spark_features_job`: it rebuilds the run's config from its arguments, reads
the raw gate's result from the run folder and writes ``features.json`` there, as the in-process stage
does. The submitting task reads that typed result back (XCom still gets a small dict of paths). A data
error inside the job is written to ``features.error.json`` so the task can fail it without retries, as
it would in process; any other failure of spark-submit is left to the task's retries.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.deployment import deployment
from retrainer.core.errors import BadData
from retrainer.core.layout import RunLayout
from retrainer.core.results import FeaturesResult

JOB_MODULE = "retrainer.runners.spark_features_job"
ERROR_FILE = "features.error.json"


def conn_id() -> str:
    return deployment().spark_conn_id


def application() -> str:
    """The job's Python file (spark-submit takes a file; the package itself must be installed where the
    driver runs)."""
    spec = importlib.util.find_spec(JOB_MODULE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{JOB_MODULE} is not importable: is retrainer installed (pip install -e .)?")
    return spec.origin


def submit_settings(cfg: RunConfig, master: str = "local[*]") -> dict[str, Any]:
    """The spark-submit arguments of one run's features job (SparkSubmitHook/Operator keywords) to ``master``
    (the connection's): its driver binds loopback only when the master is on this machine."""
    from retrainer.spark.session import driver_address

    python = os.environ.get("PYSPARK_PYTHON", sys.executable)
    settings = deployment()
    bind = os.environ.get("SPARK_LOCAL_IP") or driver_address(master)
    return {
        "name": f"retrainer-features-{cfg.run.workload}-{cfg.run.date.isoformat()}",
        "application_args": cfg.to_argv(),  # no secret: the job needs neither MLflow nor a Spark URL
        "conf": {
            "spark.pyspark.python": python,
            "spark.pyspark.driver.python": os.environ.get("PYSPARK_DRIVER_PYTHON", sys.executable),
            "spark.ui.enabled": settings.spark_ui,
            "spark.ui.showConsoleProgress": "false",
            "spark.log.level": settings.spark_log_level,
        },
        # Only what the job's Python needs beyond the config in its arguments.
        "env_vars": {
            "PYSPARK_PYTHON": python,
            **({"SPARK_LOCAL_IP": bind} if bind else {}),
            # spark-submit is looked up on this PATH: the one installed with pyspark first
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        },
        "driver_memory": settings.spark_driver_memory,
    }


def error_file(cfg: RunConfig) -> Path:
    return RunLayout.of(cfg).root / ERROR_FILE


def before_submit(cfg: RunConfig) -> None:
    """No earlier attempt's result or error may be read as this attempt's."""
    RunLayout.of(cfg).discard(FeaturesResult)
    error_file(cfg).unlink(missing_ok=True)


def record_error(cfg: RunConfig, exc: BaseException) -> None:
    """Inside the job: leave a data error for the submitting task to report."""
    atomic.write_json(error_file(cfg), {"type": type(exc).__name__, "message": str(exc)})


def result_of(cfg: RunConfig, submit_error: BaseException | None = None) -> FeaturesResult:
    """After spark-submit returned: the job's data error as :class:`BadData`, its submit error as is, or
    the typed result it wrote for this run."""
    found = error_file(cfg)
    if found.exists():
        err = atomic.read_json(found)
        raise BadData(f"{err['type']} in the Spark features job: {err['message']}") from submit_error
    if submit_error is not None:
        raise submit_error
    result = RunLayout.of(cfg).load(FeaturesResult)
    if (result.workload, result.run_date) != (cfg.run.workload, cfg.run.date):
        raise ValueError(f"features job wrote a result for {result.workload} {result.run_date}, not this run's")
    return result
