"""The ``retrainer`` Airflow plugin: a listener that imports the tasks' heavy libraries in the scheduler before
its LocalExecutor forks the worker processes every task is forked from (``retrainer.runners.preload`` says why
and what). Airflow loads it from the plugins folder; the Celery workers get the same through
``[celery] celery_config_options`` instead."""

from __future__ import annotations

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin


class PreloadBeforeFork:
    """Airflow calls ``on_starting`` when a job (scheduler, dag-processor, triggerer) or a task starts, before
    the scheduler's executor starts its workers."""

    @hookimpl
    def on_starting(self, component: object) -> None:
        from airflow.configuration import conf

        from retrainer.runners.preload import before_fork

        before_fork(component, conf.get("core", "executor"))


class RetrainerPlugin(AirflowPlugin):
    name = "retrainer"
    listeners = [PreloadBeforeFork()]
