"""The one module in retrainer that knows about Airflow: task context -> RunConfig, params -> form.

A run's date D is its logical date. With Airflow 3's ``@daily`` (a trigger timetable), scheduled,
manual and backfill runs all carry the day in ``logical_date`` while their data interval may be
empty, so the data interval is never used to pick the days. The trigger form's params are the
``Tuning`` parameters, generated from their declarations.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from retrainer import params
from retrainer.config import ConfigError, RunConfig, Tuning


def run_date_from_context(context: Any) -> dt.date:
    logical = context.get("logical_date")
    if logical is None:  # Airflow 3 allows runs without a logical date: use when the run was asked for
        dag_run = context.get("dag_run")
        logical = getattr(dag_run, "run_after", None)
    if logical is None:
        raise ValueError("the DAG run has neither a logical date nor run_after: cannot tell which day to train for")
    return logical.date() if isinstance(logical, dt.datetime) else logical


def run_config(context: Any, workload: str) -> RunConfig:
    """The run's config: identity from the context, tuning from the run's params, engines from the env."""
    given = dict(context.get("params") or {})
    tuning = {p.name for p in params.parameters(Tuning)}
    unknown = sorted(set(given) - tuning)  # Airflow merges any conf key into params: refuse, never ignore
    if unknown:
        raise ConfigError(f"unknown run parameter(s) {unknown} in the DAG run's conf; known: {sorted(tuning)}")
    dag = context.get("dag")
    return RunConfig.build(
        run_date_from_context(context),
        workload,
        dag_id=getattr(dag, "dag_id", None),
        run_id=context.get("run_id"),
        **given,
    )


def trigger_form() -> dict[str, tuple[Any, dict[str, Any]]]:
    """{name: (default, JSON-schema kwargs)} for ``airflow.sdk.Param``: one per tuning parameter."""
    return {p.name: (p.default, params.json_schema(p)) for p in params.parameters(Tuning)}
