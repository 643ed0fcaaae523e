"""Celery settings for Airflow's workers: Airflow's own, plus the task libraries imported once per worker.

Set ``[celery] celery_config_options = retrainer_plugins.celery_config.CELERY_CONFIG`` (the team stack and the
server-mode tests do; Airflow puts the plugins folder on ``sys.path``). The worker's main process then imports what
``retrainer.runners.preload`` lists before it forks its pool, so each task starts with them loaded instead of
importing them again. The receiver is connected when Airflow builds its Celery app from this module, before Airflow
connects its own receiver of the same signal, which freezes the garbage collector's view of everything imported so
far (so the children do not copy those pages by collecting them).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

from retrainer.runners import preload

CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)


def _preload_task_libraries(*args: Any, **kwargs: Any) -> None:
    """Sent by the worker's main process only (not by the scheduler or api-server that build the same app)."""
    if preload.enabled():
        preload.preload()


# One receiver even when this file is loaded twice (Airflow's plugins manager also loads every file of the
# plugins folder under its bare name).
import_modules.connect(_preload_task_libraries, dispatch_uid="retrainer-preload", weak=False)
