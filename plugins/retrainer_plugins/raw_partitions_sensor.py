"""Waits for the raw partitions a retraining run reads; on timeout, fails listing what is missing. A run whose
days are past the end of a finite source (the landing record says where it ends) fails at once instead. Past
the deployment's data deadline it raises a ``data_late`` alert, once, and keeps waiting."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from retrainer_plugins.failures import no_retry_on_bad_data


class RawPartitionsSensor(BaseSensorOperator):
    """Pokes for every raw file the run's workload reads (``retrainer.data.landed_files``, the same rule the
    local runner checks): each daily partition of the window and its history, and the dimension tables.

    Meant for ``mode="reschedule"``: between pokes the worker slot is free.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, workload: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workload = workload
        self._missing: dict[str, list[str]] = {}

    def poke(self, context: Any) -> bool:
        from retrainer.data.landed_files import (
            PastTheSource,
            describe_missing,
            missing_raw_inputs,
            past_the_source,
            raw_days,
        )
        from retrainer.runners.airflow_adapter import run_config

        with no_retry_on_bad_data():  # a bad conf, or days that will never land, do not get better while waiting
            cfg = run_config(context, self.workload)
            if why := past_the_source(cfg):
                raise PastTheSource(why)
        self._missing = missing_raw_inputs(cfg)
        if self._missing:
            self.log.info(
                "waiting for raw partitions under %s/raw: %s", cfg.engines.data_root, describe_missing(self._missing)
            )
            self._late(context, cfg.run.date, describe_missing(self._missing))
            return False
        days = raw_days(cfg)
        self.log.info("all %d days of raw partitions present (%s .. %s)", len(days), days[0], days[-1])
        return True

    def _late(self, context: Any, run_date: Any, missing: str) -> None:
        """Past the deployment's data deadline: the ``data_late`` alert, once per try; the sensor keeps waiting."""
        import datetime as dt

        from retrainer.core.deployment import deployment
        from retrainer.runners.freshness import late_data
        from retrainer_plugins.notifiers import alert_once

        message = late_data(run_date, missing, dt.datetime.now(dt.UTC), deployment().data_deadline_hours)
        if message is not None and alert_once(context, "data_late", message):
            self.log.warning("%s", message)

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            from retrainer.data.landed_files import describe_missing

            raise AirflowSensorTimeout(f"{exc} Missing raw partitions: {describe_missing(self._missing)}") from exc
