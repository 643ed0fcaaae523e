"""The one module in retrainer that knows about Airflow: task context -> RunConfig, params -> form,
context -> alert, registration -> the champion Asset's event.

A run's date D is its logical date. With Airflow 3's ``@daily`` (a trigger timetable), scheduled,
manual and backfill runs all carry the day in ``logical_date`` while their data interval may be
empty, so the data interval is never used to pick the days. The trigger form's params are the
``Tuning`` parameters, generated from their declarations.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, TypeVar

from retrainer.core import params
from retrainer.core.config import ConfigError, RunConfig, Tuning
from retrainer.core.receipts import Receipt
from retrainer.core.results import RegistrationResult, StageResult
from retrainer.runners.alerts import CHAMPION_CHANGED, CHAMPION_STALE, DATA_LATE, MESSAGE_KEY, TASK_FAILED, Alert
from retrainer.workloads import RunContext

R = TypeVar("R", bound=StageResult)


def run_date_from_context(context: Any) -> dt.date:
    logical = context.get("logical_date")
    if logical is None:  # Airflow 3 allows runs without a logical date: use when the run was asked for
        dag_run = context.get("dag_run")
        logical = getattr(dag_run, "run_after", None)
    if logical is None:
        raise ValueError("the DAG run has neither a logical date nor run_after: cannot tell which day to train for")
    return logical.date() if isinstance(logical, dt.datetime) else logical


DISTRIBUTED_EXECUTORS = ("CeleryExecutor", "KubernetesExecutor", "EdgeExecutor")


def refuse_embedded_stores(executor: str, env: dict[str, str] | None = None) -> None:
    """Under an executor whose tasks run on other machines, a worker without ``RETRAINER_DATA_ROOT`` or
    ``MLFLOW_TRACKING_URI`` (or with a SQLite registry) would write to a folder and a registry no other
    worker or the scheduler sees: the run would "succeed" and promote into a private store. Fail instead."""
    if not any(name in executor for name in DISTRIBUTED_EXECUTORS):
        return
    env = dict(os.environ) if env is None else env
    problems = [f"{name} is not set" for name in ("RETRAINER_DATA_ROOT", "MLFLOW_TRACKING_URI") if not env.get(name)]
    if env.get("MLFLOW_TRACKING_URI", "").startswith("sqlite:"):
        problems.append(f"MLFLOW_TRACKING_URI is a SQLite file ({env['MLFLOW_TRACKING_URI']}), local to this worker")
    if problems:
        raise ConfigError(
            f"this task runs under the {executor}, whose workers are other machines, but on this worker "
            + "; ".join(problems)
            + ": set the shared data root and the MLflow server in every worker's environment (docs: Team stack)"
        )


def run_config(context: Any, workload: str) -> RunConfig:
    """The run's config: identity from the context, tuning from the run's params, engines from the env
    (never the embedded defaults under a distributed executor: :func:`refuse_embedded_stores`)."""
    from airflow.configuration import conf

    refuse_embedded_stores(conf.get("core", "executor", fallback=""))
    given = dict(context.get("params") or {})
    tuning = {p.name for p in params.parameters(Tuning)}
    unknown = sorted(set(given) - tuning)  # Airflow merges any conf key into params: refuse, never ignore
    if unknown:
        raise ConfigError(f"unknown run parameter(s) {unknown} in the DAG run's conf; known: {sorted(tuning)}")
    dag = context.get("dag")
    connect = spark_connect_url()
    return RunConfig.build(
        run_date_from_context(context),
        workload,
        dag_id=getattr(dag, "dag_id", None),
        run_id=context.get("run_id"),
        **given,
        **({"spark_master": connect} if connect else {}),
    )


def spark_connect_url() -> str | None:
    """The ``sc://`` URL of the deployment's Spark Connect connection (the apache-spark provider's
    ``spark_connect`` type, read by its hook), or None when no such connection is defined: then tasks use
    the run's ``spark_master`` (``RETRAINER_SPARK_MASTER``)."""
    from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from retrainer.core.deployment import deployment

    try:
        return SparkConnectHook(deployment().spark_connect_conn_id).get_connection_url()
    except AirflowNotFoundException:  # only "not defined": a failing secrets backend fails the task
        return None


def run_context(context: Any, workload: str) -> RunContext:
    """The task's run, built once: :func:`run_config` with its workload and run folder."""
    return RunContext.of(run_config(context, workload))


def hand_on(result: StageResult, run: RunContext) -> dict[str, str]:
    """What a task returns to XCom: the receipt of the result its stage saved in the run folder."""
    return Receipt.issue(result, run.layout.path_of(type(result))).to_dict()


def received(receipt: Any, result_type: type[R]) -> R:
    """An upstream task's result, loaded from the run folder through its receipt (digest checked)."""
    return Receipt.from_dict(receipt).redeem(result_type)


def trigger_form() -> dict[str, tuple[Any, dict[str, Any]]]:
    """{name: (default, JSON-schema kwargs)} for ``airflow.sdk.Param``: one per tuning parameter."""
    return {p.name: (p.default, params.json_schema(p)) for p in params.parameters(Tuning)}


def _run_date_or_none(context: Any) -> dt.date | None:
    try:
        return run_date_from_context(context)
    except ValueError:
        return None


def alert_from_context(context: Any, event: str) -> Alert:
    """The alert for a task callback's context: a final failure (with its exception), a champion change (with the
    announcement the task returned) or a freshness alert (its message under ``MESSAGE_KEY``, put there by the task
    that raised it)."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    where = {
        "dag_id": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", "?"),
        "run_id": str(context.get("run_id") or getattr(ti, "run_id", "?")),
        "task_id": getattr(ti, "task_id", "?"),
        "try_number": int(getattr(ti, "try_number", 0) or 0),
        "run_date": _run_date_or_none(context),
    }
    if event == TASK_FAILED:
        exc = context.get("exception")
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "no exception recorded"
        message = f"{where['dag_id']} run {where['run_id']}: task {where['task_id']} failed for good: {reason}"
        return Alert(TASK_FAILED, message=message, details={"exception": reason}, **where)
    if event == CHAMPION_CHANGED:
        news = ti.xcom_pull(task_ids=ti.task_id) or {}
        previous = news.get("previous_version")
        was = f"was v{previous}" if previous is not None else "its first champion"
        message = f"{news.get('model')} champion is now v{news.get('version')} ({was}): {news.get('decision')}"
        return Alert(CHAMPION_CHANGED, message=message, details=news, **where)
    if event in (DATA_LATE, CHAMPION_STALE):
        return Alert(event, message=str(context[MESSAGE_KEY]), **where)
    raise ValueError(f"unknown alert event {event!r}")


def publish_champion(context: Any, registration: RegistrationResult, asset: Any, workload: str) -> dict[str, Any]:
    """Attach the announcement to the champion Asset's event, or skip (no event) when the champion did not
    change: a skipped task emits no Asset event, so downstream DAGs run once per new champion."""
    from airflow.sdk.exceptions import AirflowSkipException

    from retrainer.core.results import EvaluationResult
    from retrainer.registry.promotion import announcement, mark_published

    if not registration.champion_changed:
        raise AirflowSkipException(f"champion unchanged: {registration.decision}")
    run = run_context(context, workload)
    # register saves the evaluation again when it had to re-evaluate against a champion that moved
    news = announcement(registration, run.layout.load(EvaluationResult), run.config.run.date)
    context["outlet_events"][asset].extra = news
    mark_published(run.layout.promotion_intent, registration.version)
    return news


def champion_events(context: Any) -> list[dict[str, Any]]:
    """The announcements of the Asset events that triggered this run, oldest first."""
    events = context.get("triggering_asset_events") or {}
    return [dict(event.extra or {}) for per_asset in events.values() for event in per_asset]
