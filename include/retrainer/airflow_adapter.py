"""The one module in retrainer that knows about Airflow contexts: context -> RunConfig.

A run's date D is its logical date. With Airflow 3's ``@daily`` (a trigger timetable), scheduled,
manual and backfill runs all carry the day in ``logical_date`` while their data interval may be
empty, so the data interval is never used to pick the days.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from retrainer.config import RunConfig

PARAM_NAMES = ("window_days", "eval_days", "epochs", "batch_size", "learning_rate", "min_auc_gain")


def run_date_from_context(context: Any) -> dt.date:
    logical = context.get("logical_date")
    if logical is None:  # Airflow 3 allows runs without a logical date: use when the run was asked for
        dag_run = context.get("dag_run")
        logical = getattr(dag_run, "run_after", None)
    if logical is None:
        raise ValueError("the DAG run has neither a logical date nor run_after: cannot tell which day to train for")
    return logical.date() if isinstance(logical, dt.datetime) else logical


def run_config(context: Any, **overrides: Any) -> RunConfig:
    params = context.get("params") or {}
    dag = context.get("dag")
    base = RunConfig(run_date=run_date_from_context(context))
    return base.with_overrides(
        **{k: params.get(k) for k in PARAM_NAMES},
        dag_id=getattr(dag, "dag_id", None),
        run_id=context.get("run_id"),
        **overrides,
    )
