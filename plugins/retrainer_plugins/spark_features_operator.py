"""The features task. When the run's Spark is a Connect server (the ``spark_connect`` connection
``RETRAINER_SPARK_CONNECT_CONN_ID``, default ``retrainer_spark_connect``, as ``make run`` and ``make airflow``
define it; or ``RETRAINER_SPARK_MASTER=sc://...``) the stage runs in the task against the warm server, like
``check_raw`` and ``validate``. Otherwise it is the Apache Spark provider's
``SparkSubmitOperator``: the run's features job is submitted to the master of an Airflow connection
(``RETRAINER_SPARK_CONN_ID``, default ``retrainer_spark``; for example a large one-off backfill on a
cluster). Either way the receipt of the result saved in the run folder goes to XCom. Importing this module
imports no Spark; the spark-submit settings are computed from the run's config when the task runs.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator


class SparkFeaturesOperator(SparkSubmitOperator):
    """Build the run's features on Spark from the raw gate's result (the ``check_raw`` task's receipt, an
    XComArg)."""

    template_fields = (*SparkSubmitOperator.template_fields, "gate")
    ui_color = "#e25a1c"  # Spark orange

    def __init__(self, *, workload: str, gate: Any, conn_id: str | None = None, **kwargs: Any) -> None:
        from retrainer.core.deployment import deployment

        settings = deployment()
        kwargs.setdefault("driver_memory", settings.spark_driver_memory)
        super().__init__(conn_id=conn_id or settings.spark_conn_id, **kwargs)
        self.workload = workload
        self.gate = gate

    def execute(self, context: Any) -> dict[str, Any]:
        from retrainer.core.results import RawGateResult
        from retrainer.runners.airflow_adapter import hand_on, received, run_context
        from retrainer.spark.session import is_connect
        from retrainer_plugins.failures import no_retry_on_bad_data

        with no_retry_on_bad_data():
            run = run_context(context, self.workload)
            gate = received(self.gate, RawGateResult)  # still check_raw's result?
            if is_connect(run.config.engines.spark_master):
                from retrainer.stages.features import build_features

                self.log.info("features on Spark Connect %s (no spark-submit)", run.config.engines.spark_master)
                return hand_on(build_features(gate, run), run)
            return self._submit(context, run)

    def _submit(self, context: Any, run: Any) -> dict[str, Any]:
        """The second path: spark-submit the features job to the master of the Spark connection."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from retrainer.core.config import ConfigError
        from retrainer.data import features_submission
        from retrainer.runners.airflow_adapter import hand_on

        cfg = run.config
        try:  # the hook would silently fall back to YARN
            connection = BaseHook.get_connection(self._conn_id)
        except AirflowNotFoundException as exc:
            raise ConfigError(
                f"no Airflow connection {self._conn_id!r} for the Spark master: define it (for example "
                f'AIRFLOW_CONN_{self._conn_id.upper()}=\'{{"conn_type": "spark", "host": "local[*]"}}\') '
                f"or set {features_submission.CONN_ID_ENV}"
            ) from exc
        master = f"{connection.host}:{connection.port}" if connection.port else str(connection.host or "")
        settings = features_submission.submit_settings(cfg, master)
        self.application = features_submission.application()
        self.name, self.application_args = settings["name"], settings["application_args"]
        self.conf = (self.conf or {}) | settings["conf"]
        self.env_vars = (self.env_vars or {}) | settings["env_vars"]
        features_submission.before_submit(cfg)
        try:
            super().execute(context)
        except Exception as exc:
            return hand_on(features_submission.result_of(cfg, exc), run)
        return hand_on(features_submission.result_of(cfg), run)
