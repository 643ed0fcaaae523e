"""Import the libraries the pipeline's tasks use once, in the process that forks the task processes.

Under a real scheduler every task is a process of its own, and each paid for its own imports: Great
Expectations (about 3-4 s), TensorFlow (2.5-4.5 s), MLflow (1-2 s), scikit-learn, pandas and the Spark Connect
client, again in every task and every run (measured: a warm 28-day run took 51 s under the LocalExecutor
against 34 s in one process). On Linux, Airflow's executors start a task by a bare ``os.fork`` of a process that
lives for many tasks (a LocalExecutor worker, forked from the scheduler; a Celery pool process, forked from
the worker), so a module imported there before the fork is already in every task: the child shares its pages
and only pays for what it touches. Airflow does the same for its own modules in Celery workers
(``on_celery_import_modules``); this adds the ones retrainer's tasks are slow to import.

Only imports, nothing that starts an engine, a thread pool or a connection: those must not cross a fork.
TensorFlow's import is safe to fork after (the tests fork a trained model's process from a process that
imported it); building a model or a dataset before the fork would not be.

Wired in two places, both opt-out with ``RETRAINER_PRELOAD=0``:

- the Celery workers, through Airflow's ``[celery] celery_config_options`` (``retrainer_plugins.celery_config``):
  the worker's main process imports these before it forks its pool;
- the scheduler with the LocalExecutor, through a listener of the ``retrainer`` plugin (``on_starting``, which
  Airflow calls before the executor forks its workers).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

# What the tasks import, heaviest first. Each is an import only; see the module docstring.
MODULES: tuple[str, ...] = (
    "tensorflow",
    "keras",
    "great_expectations",
    "mlflow",
    "mlflow.pyfunc",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.compose",
    "pyspark.sql.connect.session",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "pandas",
)
ENV = "RETRAINER_PRELOAD"
CELERY_CONFIG_OPTION = "retrainer_plugins.celery_config.CELERY_CONFIG"  # [celery] celery_config_options


def enabled() -> bool:
    """Preloading is on unless ``RETRAINER_PRELOAD`` is ``0``/``false``/``no`` (a memory-tight worker that runs
    few tasks may prefer to pay the imports per task)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def preload(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import ``modules``; returns the seconds each took (0 for one already imported). A module that is not
    installed is skipped with a warning: a worker image without TensorFlow (say) still runs the other tasks."""
    took: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("retrainer preload: %s not imported (%s); tasks that need it will fail", name, exc)
            continue
        took[name] = round(time.perf_counter() - started, 2)
    if "mlflow" in took:  # imported now or before
        started = time.perf_counter()
        if warm_mlflow_requirements_check():
            took["mlflow installed-package map"] = round(time.perf_counter() - started, 2)
    log.info("retrainer preload: %.1f s, %s", sum(took.values()), took)
    return took


def warm_mlflow_requirements_check() -> bool:
    """Build, once, the map from importable modules to installed distributions that MLflow's ``log_model`` reads
    to compare the model's pip requirements with this environment (``warn_dependency_requirement_mismatches``):
    ``importlib.metadata`` walks every installed distribution's file list, 0.94-0.99 s in a fresh process (1.7 s
    of a 2.2 s ``log_model`` under cProfile), in every ``register`` task. MLflow keeps the map in a module global,
    so built here it is in every forked task. Installed-package metadata only: nothing that cannot cross a fork.
    MLflow's function is private; if a release renames it, this is skipped with a log line and ``register`` pays
    the walk itself, as before."""
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()
    except (ImportError, AttributeError) as exc:
        log.info("retrainer preload: MLflow's installed-package map not built ahead (%s)", exc)
        return False
    return True


def is_scheduler_with_local_executor(executor: str, argv: list[str] | None = None) -> bool:
    """Whether this process is ``airflow scheduler`` running the LocalExecutor (whose workers it forks). The
    dag-processor and the triggerer start jobs too, but fork no tasks: preloading there only costs memory."""
    args = sys.argv if argv is None else argv
    return len(args) > 1 and args[1] == "scheduler" and "LocalExecutor" in executor


def before_fork(component: object, executor: str) -> None:
    """Preload if this is where tasks are forked from; the listener's ``on_starting`` calls it. Only for a job:
    a task process forked from the scheduler inherits its ``argv`` and calls the same hook for itself. The
    class is compared by name, so a task process never imports Airflow's scheduler-side job module."""
    kind = type(component)
    is_job = (kind.__module__, kind.__qualname__) == ("airflow.jobs.job", "Job")
    if is_job and enabled() and is_scheduler_with_local_executor(executor):
        preload()
