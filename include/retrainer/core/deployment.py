"""Deployment settings: where a team's Airflow, Spark, Kubernetes and alert channels are.

Unlike run parameters (:mod:`retrainer.core.config`) these are not chosen per run and never appear in
the trigger form or a worker's argv: each comes from one environment variable, declared here once with
its default and help, and read through :func:`deployment` (the docs' tables are generated from these
declarations). Some are read when a DAG file is parsed (the training queue), the rest when a task runs.
"""

from __future__ import annotations

import dataclasses

from retrainer.core import params
from retrainer.core.params import param


class DeploymentError(ValueError):
    """A deployment setting has a value it cannot take; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Deployment:
    training_queue: str = param(
        "default", env="RETRAINER_TRAINING_QUEUE",
        help="Celery queue of the train task and of the training operator's GPU work (read when the DAG is "
        "parsed; compose: training, where the GPU worker listens)",
    )  # fmt: skip
    gpu_pool_slots: int = param(
        1, minimum=1, maximum=1024, env="RETRAINER_GPU_POOL_SLOTS",
        help="size of the gpu pool that make airflow-db and the local stack create",
    )  # fmt: skip
    spark_connect_conn_id: str = param(
        "retrainer_spark_connect", env="RETRAINER_SPARK_CONNECT_CONN_ID",
        help="the Airflow connection (type spark_connect) of the Spark Connect server every Spark task uses; "
        "without it, tasks use the run's spark_master",
    )  # fmt: skip
    spark_conn_id: str = param(
        "retrainer_spark", env="RETRAINER_SPARK_CONN_ID",
        help="the Airflow connection whose master the features job is submitted to (when Spark Connect is not used)",
    )  # fmt: skip
    spark_driver_memory: str = param(
        "1g", env="RETRAINER_SPARK_DRIVER_MEMORY",
        help="--driver-memory of the Spark Connect server, the features job and local sessions (1g holds a year "
        "of flights; docs/benchmarks.md)",
    )  # fmt: skip
    spark_log_level: str = param("WARN", env="RETRAINER_SPARK_LOG_LEVEL", help="Spark's own log level in the job")
    spark_ui: str = param(
        "false", choices=("false", "true"), env="RETRAINER_SPARK_UI", help="the Spark UI of the features job"
    )
    shuffle_partitions: int = param(
        8, minimum=1, maximum=100000, env="RETRAINER_SHUFFLE_PARTITIONS",
        help="spark.sql.shuffle.partitions of local Spark sessions",
    )  # fmt: skip
    k8s_image: str = param(
        "", env="RETRAINER_K8S_IMAGE", help="the kubernetes launcher's worker image (the project image; required)"
    )
    k8s_namespace: str = param("default", env="RETRAINER_K8S_NAMESPACE", help="namespace of the training pods")
    k8s_data_pvc: str = param(
        "", env="RETRAINER_K8S_DATA_PVC", help="claim holding the data root, mounted at the same path in every pod"
    )
    k8s_service_account: str = param("", env="RETRAINER_K8S_SERVICE_ACCOUNT", help="service account of the pods")
    k8s_conn_id: str = param(
        "kubernetes_default", env="RETRAINER_K8S_CONN_ID", help="the Airflow connection to the cluster"
    )
    tpu_accelerator: str = param(
        "tpu-v5-lite-podslice", env="RETRAINER_TPU_ACCELERATOR", help="GKE TPU accelerator node selector"
    )
    tpu_topology: str = param("2x2", env="RETRAINER_TPU_TOPOLOGY", help="GKE TPU topology node selector")
    alert_channels: str = param(
        "", env="RETRAINER_ALERT_CHANNELS",
        help="where failure and champion alerts go besides the log and _alerts/: comma-separated smtp, slack",
    )  # fmt: skip
    alert_email: str = param("", env="RETRAINER_ALERT_EMAIL", help="recipients of the smtp channel (required by it)")
    smtp_conn_id: str = param("smtp_default", env="RETRAINER_SMTP_CONN_ID", help="the smtp channel's connection")
    slack_conn_id: str = param(
        "slack_api_default", env="RETRAINER_SLACK_CONN_ID", help="the slack channel's connection"
    )
    slack_channel: str = param("#ml-alerts", env="RETRAINER_SLACK_CHANNEL", help="the slack channel")
    min_gain_floor: float = param(
        0.0, minimum=-1000, maximum=1000, env="RETRAINER_MIN_GAIN_FLOOR",
        help="the promotion bar a run cannot go below: evaluate uses max(the run's min_gain, this), so whoever "
        "can trigger a run can raise the bar from the form, never lower it",
    )  # fmt: skip
    min_eval_days: int = param(
        1, minimum=1, maximum=60, env="RETRAINER_MIN_EVAL_DAYS",
        help="the fewest evaluation days a run may be promoted on: a run with fewer is evaluated and registered "
        "but held",
    )  # fmt: skip
    max_slice_drop: float = param(
        0.05, minimum=0, maximum=1, env="RETRAINER_MAX_SLICE_DROP",
        help="the slice gate: a run whose new model is worse than the champion on one of the workload's slices by "
        "more than this fraction of the champion's value there (AUC 0.70 -> 0.66 is 5.7 %) is held, whatever its "
        "overall gain; 1 turns the gate off",
    )  # fmt: skip
    slice_min_rows: int = param(
        500, minimum=1, maximum=10_000_000, env="RETRAINER_SLICE_MIN_ROWS",
        help="the slice gate: a slice with fewer evaluation rows is reported, never gated (too noisy to hold a "
        "model on)",
    )  # fmt: skip
    bootstrap_resamples: int = param(
        200, minimum=10, maximum=10000, env="RETRAINER_BOOTSTRAP_RESAMPLES",
        help="resamples of the evaluation rows behind each reported 95 % interval (overall and per slice)",
    )  # fmt: skip
    serving_p99_ms_batch1: float = param(
        250.0, minimum=0, maximum=600_000, env="RETRAINER_SERVING_P99_MS_BATCH1",
        help="the serving budget: export fails a SavedModel whose p99 latency for one row (measured in the fresh "
        "process that loaded it) is above this many milliseconds; 0: not checked",
    )  # fmt: skip
    serving_p99_ms_batch256: float = param(
        1000.0, minimum=0, maximum=600_000, env="RETRAINER_SERVING_P99_MS_BATCH256",
        help="the serving budget: the same for a batch of 256 rows",
    )  # fmt: skip
    saved_model_max_mb: float = param(
        200.0, minimum=0, maximum=1_000_000, env="RETRAINER_SAVED_MODEL_MAX_MB",
        help="the serving budget: export fails a SavedModel larger than this many MiB on disk; 0: not checked",
    )  # fmt: skip
    tflite: str = param(
        "check", choices=("check", "off"), env="RETRAINER_TFLITE",
        help="check: export also converts the SavedModel to TF Lite (select TF ops allowed: the lookups are hash "
        "tables) and keeps it only if it predicts what the SavedModel predicts; off: no conversion",
    )  # fmt: skip
    require_approval: str = param(
        "no", choices=("no", "yes"), env="RETRAINER_REQUIRE_APPROVAL",
        help="yes: a person approves each promotion in Airflow (a human-in-the-loop task shows the decision record "
        "before register); rejected, timed out or never asked (retrainer run), the champion stays",
    )  # fmt: skip
    approval_timeout_minutes: float = param(
        1440.0, exclusive_minimum=0, maximum=525_600, env="RETRAINER_APPROVAL_TIMEOUT_MINUTES",
        help="how long the approval task waits for an answer; then it takes Reject",
    )  # fmt: skip
    data_deadline_hours: float = param(
        6.0, minimum=0, maximum=8760, env="RETRAINER_DATA_DEADLINE_HOURS",
        help="freshness: a run dated D whose raw days have not all landed this many hours after D 00:00 UTC raises "
        "a data_late alert (once; the sensor keeps waiting until its time-out)",
    )  # fmt: skip
    champion_max_age_days: int = param(
        14, minimum=1, maximum=3650, env="RETRAINER_CHAMPION_MAX_AGE_DAYS",
        help="freshness: a run that leaves a champion trained for a date more than this many days before its own "
        "raises a champion_stale alert",
    )  # fmt: skip
    serving_root: str = param(
        "", env="RETRAINER_SERVING_ROOT",
        help="where the champion is kept in TensorFlow Serving's layout (<root>/<model>/<version>/, only the "
        "champion's version); empty: <data root>/serving",
    )  # fmt: skip
    mlflow_ui_url: str = param(
        "", env="RETRAINER_MLFLOW_UI_URL",
        help="the MLflow UI as an operator's browser reaches it, for the tasks' links in Airflow (MLflow run, model "
        "version, report); empty: the tracking URI when tasks log to an MLflow server (make airflow sets its own)",
    )  # fmt: skip
    checkpoint_seconds: float = param(
        10.0, minimum=0, maximum=3600, env="RETRAINER_CHECKPOINT_SECONDS",
        help="training checkpoints at most this often (and always at a phase's end and where a member stops; "
        "every epoch under MultiWorkerMirroredStrategy, whose workers must save together): a killed task "
        "redoes at most this much; 0: every epoch",
    )  # fmt: skip
    keep_runs: int = param(
        10, minimum=0, maximum=100000, env="RETRAINER_KEEP_RUNS",
        help="retention: the newest run folders of a workload kept besides every registered version's (retrainer "
        "prune and the housekeeping DAG remove the rest)",
    )  # fmt: skip
    prune_min_age_hours: float = param(
        24.0, minimum=1, maximum=100000, env="RETRAINER_PRUNE_MIN_AGE_HOURS",
        help="retention: nothing changed more recently than this is removed (a run in flight, a write in progress)",
    )  # fmt: skip
    log_level: str = param(
        "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), env="RETRAINER_LOG_LEVEL",
        help="the retrainer CLI's log level (its --log-level overrides it)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        problems = params.validate_group(self)
        if problems:
            names = {p.name: p.spec.env for p in params.parameters(Deployment)}
            named = [f"{names.get(msg.split(' ', 1)[0].rstrip(':'), '?')}: {msg}" for msg in problems]
            raise DeploymentError("invalid deployment setting: " + "; ".join(named))


def setting_env(name: str) -> str:
    """The environment variable of the setting ``name`` (a field of :class:`Deployment`), for messages that tell
    an operator what to change."""
    return str(next(p.spec.env for p in params.parameters(Deployment) if p.name == name))


def deployment() -> Deployment:
    """The settings as the environment has them now (read at each call: tasks and tests change it)."""
    return Deployment()
