"""The one retraining DAG shape, built per workload: each workload's DAG file is a call to
:func:`retrain_dag`. Not a DAG file itself (listed in ``.airflowignore``); Airflow puts the dags
folder on ``sys.path``, so DAG files import it by name.

Tasks wire the ``retrainer`` stage functions: each task builds its run once (a ``RunContext``), loads its
typed inputs from the run folder through the upstream tasks' receipts (XCom: type, path, digest), and
hands on the receipt of its own result.
Heavy libraries are imported inside the tasks only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, BaseOperator, Param, dag, task

from retrainer.core.config import engine_setting
from retrainer.core.deployment import deployment
from retrainer.registry.promotion import POOL as PROMOTION_POOL
from retrainer_plugins.failures import no_retry_on_bad_data
from retrainer_plugins.notifiers import champion_freshness, notifiers
from retrainer_plugins.raw_partitions_sensor import RawPartitionsSensor
from retrainer_plugins.spark_features_operator import SparkFeaturesOperator
from retrainer_plugins.task_links import with_links
from retrainer_plugins.training_operator import TensorFlowTrainOperator

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=20),
    "execution_timeout": timedelta(hours=1),
}
START_DATE = pendulum.datetime(2013, 1, 29, tz="UTC")
TRAINING_QUEUE = deployment().training_queue  # parse time: the queue is part of the DAG


def default_args() -> dict[str, Any]:
    """Every task of every retrainer DAG: retries, timeouts, and a failure after its last retry is an alert
    (task log + JSON file, plus the channels configured when the DAG is parsed)."""
    return {**DEFAULT_ARGS, "on_failure_callback": notifiers("task_failed")}


def champion_asset(workload: str) -> Asset:
    """The Asset that gets an event each time the workload's ``champion`` alias moves (metadata: the
    version, its metrics, the run date); schedule a DAG on it to act on every new champion."""
    return Asset(name=f"{workload}_champion", uri=f"x-mlflow-model://{workload}/champion", group="model")


def trigger_params() -> dict[str, Param]:
    """The UI's trigger form, generated from the declared tuning parameters."""
    from retrainer.runners.airflow_adapter import trigger_form

    return {name: Param(default, **schema) for name, (default, schema) in trigger_form().items()}


# --- the tasks: each builds its run once, redeems its inputs' receipts, runs one stage, hands on a receipt ---
# A task's XCom is a receipt (type, path, digest) of the result its stage saved in the run folder, never
# the result itself: the run folder is the one record, and a result rewritten after it was handed on is
# refused downstream.


@task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
def check_raw(workload: str, **context: Any) -> dict[str, Any]:
    from retrainer.runners.airflow_adapter import hand_on, run_context
    from retrainer.stages.check_raw import check_raw_days

    with no_retry_on_bad_data():
        run = run_context(context, workload)
        return hand_on(check_raw_days(run), run)


@task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
def validate(workload: str, features: dict[str, Any], **context: Any) -> dict[str, Any]:
    from retrainer.core.results import FeaturesResult
    from retrainer.runners.airflow_adapter import hand_on, received, run_context
    from retrainer.stages.validate import validate_features

    with no_retry_on_bad_data():
        run = run_context(context, workload)
        return hand_on(validate_features(received(features, FeaturesResult), run), run)


def _on_the_trained_model(stage: Any, workload: str, validated: Any, training: Any, context: Any) -> dict[str, Any]:
    """evaluate and export: a stage over the validated features and the trained model."""
    from retrainer.core.results import TrainingResult, ValidationResult
    from retrainer.runners.airflow_adapter import hand_on, received, run_context

    with no_retry_on_bad_data():
        run = run_context(context, workload)
        return hand_on(stage(received(validated, ValidationResult), received(training, TrainingResult), run), run)


@task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
def evaluate(workload: str, validated: dict[str, Any], training: dict[str, Any], **context: Any) -> dict[str, Any]:
    from retrainer.stages.evaluate import evaluate_models

    return _on_the_trained_model(evaluate_models, workload, validated, training, context)


@task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
def export(workload: str, validated: dict[str, Any], training: dict[str, Any], **context: Any) -> dict[str, Any]:
    from retrainer.stages.export import export_model

    return _on_the_trained_model(export_model, workload, validated, training, context)


# One promotion at a time across every run of every kind (scheduled, manual, backfill):
# max_active_runs does not cover backfills; the pool does (created by `make airflow-db`, the stack).
@task(multiple_outputs=False, execution_timeout=timedelta(minutes=30), pool=PROMOTION_POOL)
def register(
    workload: str, receipts: dict[str, dict[str, Any]], approval: dict[str, Any] | None = None, **context: Any
) -> dict[str, Any]:
    """``receipts``: the validate, train, evaluate and export tasks' receipts, by their task ids; ``approval``:
    the approval task's answer, in a deployment that requires one."""
    from retrainer.core.results import (
        ApprovalResult,
        EvaluationResult,
        ExportResult,
        TrainingResult,
        ValidationResult,
    )
    from retrainer.runners.airflow_adapter import hand_on, received, run_context
    from retrainer.stages.register import register_model

    with no_retry_on_bad_data():
        run = run_context(context, workload)
        result = register_model(
            received(receipts["validate"], ValidationResult),
            received(receipts["train"], TrainingResult),
            received(receipts["evaluate"], EvaluationResult),
            received(receipts["export"], ExportResult),
            run,
            approval=ApprovalResult.from_answer(approval) if approval else None,
        )
        champion_freshness(context, result.registered_model, run.config.run.date, result.tracking_uri)
        return hand_on(result, run)


def publish_champion(workload: str) -> Any:
    """The task that announces a new champion; skipped when the champion did not move: a skipped task emits
    no Asset event, so consumers of the champion Asset run once per new champion, never for a held or rerun
    registration."""
    champion = champion_asset(workload)

    @task(
        multiple_outputs=False,
        execution_timeout=timedelta(minutes=5),
        outlets=[champion],
        on_success_callback=notifiers("champion_changed"),
    )
    def publish_champion(registration: dict[str, Any], **context: Any) -> dict[str, Any]:
        from retrainer.core.results import RegistrationResult
        from retrainer.runners.airflow_adapter import publish_champion as publish
        from retrainer.runners.airflow_adapter import received

        return publish(context, received(registration, RegistrationResult), champion, workload)

    return publish_champion


def retrain_dag(workload: str, *, doc_md: str, tags: tuple[str, ...] = (), start_date: Any = START_DATE) -> Any:
    """The DAG ``<workload>_retrain``: wait for raw data -> raw gate -> features -> validate -> train -> evaluate
    -> export -> register -> publish_champion, scheduled daily; a run dated D trains on the days before D."""

    @dag(
        dag_id=f"{workload}_retrain",
        schedule="@daily",
        start_date=start_date,
        catchup=False,
        # Not 1: a scheduled run waiting (hours) for its raw data must not block a run triggered from the UI.
        # Champion moves are serialised by the promotion pool and lock, not by this.
        max_active_runs=3,
        default_args=default_args(),
        params=trigger_params(),
        tags=["retrainer", workload, "tensorflow", *tags],
        doc_md=doc_md,
    )
    def retrain() -> None:
        wait = RawPartitionsSensor(
            task_id="wait_for_raw_partitions",
            workload=workload,
            mode="reschedule",
            poke_interval=timedelta(minutes=5),
            timeout=timedelta(hours=6),
            execution_timeout=timedelta(minutes=5),
        )
        # Extra links (the MLflow run, the model version, the report, the Data Docs): retrainer_plugins.task_links
        gate = with_links(check_raw(workload), workload)
        wait >> gate
        # spark-submit to the master of the Airflow connection RETRAINER_SPARK_CONN_ID (default retrainer_spark).
        features = SparkFeaturesOperator(
            task_id="features", workload=workload, gate=gate, execution_timeout=timedelta(minutes=30)
        ).output
        # validate hands on the features' final (validated) place: nothing downstream reads unvalidated data.
        validated = with_links(validate(workload, features), workload)
        # Launcher, accelerator and worker count: the deployment's RETRAINER_* settings. On Kubernetes the task is
        # the provider's KubernetesJobOperator (it creates the pods' Job and waits in the triggerer); otherwise
        # it trains in its worker, and Celery workers with GPUs listen on the training queue (docker-compose.yaml).
        if engine_setting("launcher") == "kubernetes":
            from retrainer_plugins.kubernetes_train_operator import TensorFlowKubernetesTrainOperator

            train_task: BaseOperator = TensorFlowKubernetesTrainOperator(
                task_id="train", workload=workload, validated=validated, execution_timeout=timedelta(hours=2)
            )
        else:
            train_task = TensorFlowTrainOperator(
                task_id="train", workload=workload, validated=validated, queue=TRAINING_QUEUE,
                execution_timeout=timedelta(hours=2),
            )  # fmt: skip
        trained = with_links(train_task, workload).output
        evaluation = with_links(evaluate(workload, validated, trained), workload)
        exported = export(workload, validated, trained)
        evaluation >> exported
        receipts = {"validate": validated, "train": trained, "evaluate": evaluation, "export": exported}
        approval = None
        if deployment().require_approval == "yes":  # a person approves before the champion moves (parse time)
            from retrainer_plugins.approval_operator import PromotionApprovalOperator

            approve = PromotionApprovalOperator(
                task_id="approve_promotion", workload=workload, evaluation=evaluation,
                timeout_minutes=deployment().approval_timeout_minutes, retries=0,
            )  # fmt: skip
            exported >> approve
            approval = approve.output
        publish_champion(workload)(with_links(register(workload, receipts, approval), workload))

    return retrain()


def on_new_champion_dag(workload: str, *, doc_md: str, tags: tuple[str, ...] = ()) -> Any:
    """The DAG ``<workload>_on_new_champion``, scheduled on the champion Asset: one run per new champion."""

    @dag(
        dag_id=f"{workload}_on_new_champion",
        schedule=[champion_asset(workload)],
        start_date=START_DATE,
        catchup=False,
        default_args=default_args(),
        tags=["retrainer", workload, "downstream", *tags],
        doc_md=doc_md,
    )
    def on_new_champion() -> None:
        @task(multiple_outputs=False, execution_timeout=timedelta(minutes=10))
        def record_champion(**context: Any) -> dict[str, list[str]]:
            from retrainer.core.config import default_data_root, default_tracking_uri
            from retrainer.registry.champion_log import act_on_champions
            from retrainer.runners.airflow_adapter import champion_events

            return act_on_champions(champion_events(context), default_data_root(), default_tracking_uri())

        record_champion()

    return on_new_champion()


def housekeeping_dag(workloads: list[str], *, doc_md: str) -> Any:
    """The DAG ``retrainer_housekeeping``: once a day, one task per workload applies the retention policy
    (:mod:`retrainer.stages.prune`) with the deployment's settings. No catch-up: pruning now covers the past."""

    @dag(
        dag_id="retrainer_housekeeping",
        schedule="@daily",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["retrainer", "housekeeping"],
        doc_md=doc_md,
    )
    def housekeeping() -> None:
        for workload in workloads:

            @task(task_id=f"prune_{workload}", multiple_outputs=False, execution_timeout=timedelta(minutes=30))
            def prune_runs(name: str = workload) -> dict[str, Any]:
                from retrainer.core.config import default_data_root, default_tracking_uri
                from retrainer.stages.prune import prune

                settings = deployment()
                plan = prune(default_data_root(), name, default_tracking_uri(), settings.keep_runs,
                             settings.prune_min_age_hours * 3600)  # fmt: skip
                return {"kept": len(plan.kept), "removed": sorted(plan.pruned), "freed_bytes": plan.freed_bytes}

            prune_runs()

    return housekeeping()
