"""Waits for the raw partitions a retraining run reads; on timeout, fails listing what is missing."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout


class RawPartitionsSensor(BaseSensorOperator):
    """Pokes for every daily partition in the run's window (history included) and the dimension tables.

    Meant for ``mode="reschedule"``: between pokes the worker slot is free.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, workload: str = "flight_delay", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workload = workload
        self._missing: dict[str, list[str]] = {}

    def poke(self, context: Any) -> bool:
        from retrainer.airflow_adapter import run_config
        from retrainer.landing import describe_missing, missing_partitions
        from retrainer.workloads import get_workload

        cfg = run_config(context, workload=self.workload)
        days = get_workload(self.workload).raw_days(cfg.train_start, cfg.end)
        self._missing = missing_partitions(cfg.data_root, days)
        if self._missing:
            self.log.info("waiting for raw partitions under %s/raw: %s", cfg.data_root, describe_missing(self._missing))
            return False
        self.log.info("all %d days of raw partitions present (%s .. %s)", len(days), days[0], days[-1])
        return True

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            from retrainer.landing import describe_missing

            raise AirflowSensorTimeout(f"{exc} Missing raw partitions: {describe_missing(self._missing)}") from exc
