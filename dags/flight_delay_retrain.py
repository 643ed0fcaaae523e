"""
### Flight delay: scheduled retraining

Retrains the `flight_delay` model (will a flight from NYC arrive more than 15 minutes late?) on
the NYC 2013 flights data every day:

`wait_for_raw_partitions` -> `features` (Spark) -> `validate` (Great Expectations) ->
`train` (TensorFlow, tf.distribute) -> `evaluate` (vs. the MLflow `champion`) -> `export`
(SavedModel, checked in a fresh process) -> `register` (MLflow version, `challenger` alias,
`champion` only when the gate says promote).

A run dated **D** (its logical date) trains on `[D - window_days, D - eval_days)` and evaluates on
`[D - eval_days, D)`. Outputs live under `runs/flight_delay/date=D/` and a rerun replaces them.
Trigger with parameters from the UI form; backfill with `airflow backfill create`.
All logic is in the `retrainer` package; this file only wires tasks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from retrainer_plugins.raw_partitions_sensor import RawPartitionsSensor

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=20),
    "execution_timeout": timedelta(hours=1),
}

PARAMS = {
    "window_days": Param(
        28,
        type="integer",
        minimum=3,
        maximum=365,
        title="Window days",
        description="Days before the run date used for training + evaluation.",
    ),
    "eval_days": Param(
        7,
        type="integer",
        minimum=1,
        maximum=60,
        title="Evaluation days",
        description="The last days of the window, held out for evaluation.",
    ),
    "epochs": Param(3, type="integer", minimum=1, maximum=100, title="Epochs"),
    "batch_size": Param(
        1024, type="integer", minimum=16, maximum=65536, title="Batch size", description="Per replica."
    ),
    "learning_rate": Param(0.003, type="number", exclusiveMinimum=0, maximum=1, title="Learning rate"),
    "min_auc_gain": Param(
        0.0,
        type="number",
        minimum=-1,
        maximum=1,
        title="Minimum AUC gain",
        description="Promote only if the new AUC beats the champion's by at least this.",
    ),
}


@dag(
    dag_id="flight_delay_retrain",
    schedule="@daily",
    start_date=pendulum.datetime(2013, 1, 29, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["retrainer", "flight_delay", "tensorflow"],
    doc_md=__doc__,
)
def flight_delay_retrain() -> None:
    wait = RawPartitionsSensor(
        task_id="wait_for_raw_partitions",
        workload="flight_delay",
        mode="reschedule",
        poke_interval=timedelta(minutes=5),
        timeout=timedelta(hours=6),
        execution_timeout=timedelta(minutes=5),
    )

    @task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
    def features(**context: Any) -> dict[str, Any]:
        from retrainer.airflow_adapter import run_config
        from retrainer.stages.features import build_features

        return build_features(run_config(context))

    @task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
    def validate(features: dict[str, Any], **context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from retrainer.airflow_adapter import run_config
        from retrainer.stages.validate import ValidationFailed, validate_features

        try:
            return validate_features(features, run_config(context))
        except ValidationFailed as exc:  # bad data does not get better on retry
            raise AirflowFailException(str(exc)) from exc

    @task(multiple_outputs=False, execution_timeout=timedelta(hours=2))
    def train(features: dict[str, Any], **context: Any) -> dict[str, Any]:
        from retrainer.airflow_adapter import run_config
        from retrainer.stages.train import train_model

        return train_model(features, run_config(context))

    @task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
    def evaluate(features: dict[str, Any], training: dict[str, Any], **context: Any) -> dict[str, Any]:
        from retrainer.airflow_adapter import run_config
        from retrainer.stages.evaluate import evaluate_models

        return evaluate_models(features, training, run_config(context))

    @task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
    def export(features: dict[str, Any], training: dict[str, Any], **context: Any) -> dict[str, Any]:
        from retrainer.airflow_adapter import run_config
        from retrainer.stages.export import export_model

        return export_model(features, training, run_config(context))

    @task(multiple_outputs=False, execution_timeout=timedelta(minutes=30))
    def register(
        exported: dict[str, Any], evaluation: dict[str, Any], training: dict[str, Any], **context: Any
    ) -> dict[str, Any]:
        from retrainer.airflow_adapter import run_config
        from retrainer.stages.register import register_model

        return register_model(exported, evaluation, training, run_config(context))

    # validate returns the features' final (validated) URIs: nothing downstream can read unvalidated data.
    feats = features()
    wait >> feats
    validated = validate(feats)
    trained = train(validated)
    evaluation = evaluate(validated, trained)
    exported = export(validated, trained)
    evaluation >> exported
    register(exported, evaluation, trained)


flight_delay_retrain()
