"""Training curves into MLflow while training runs: the chief's epochs, as they end.

Why: the MLflow run of a training run used to get its curves only from ``register``, minutes after the last epoch
(hours, for a long backfill run), so nobody could watch a run converge or diverge where they watch the others.
``train`` opens the run's MLflow run before the workers start and names it in the run's folder
(``mlflow_run.json``, :attr:`RunLayout.mlflow_run`); the chief worker, wherever a launcher started it, reads
that and logs each epoch's rows with MLflow's client under the names register would use
(:func:`retrainer.core.results.epoch_curves`, step = epoch).

One request per :data:`FLUSH_SECONDS` at most (epochs of a 28-day window take a tenth of a second; a request per
epoch would cost more than the epochs), and all that is left when training ends, which also tags the run as
streamed so that register does not log the curves twice. MLflow is not needed to train: if the run cannot be
reached the stream logs one warning and stops, and register logs the whole history as before.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from retrainer.core import atomic
from retrainer.core.results import EPOCHS_STREAMED_TAG, epoch_curves

log = logging.getLogger(__name__)
FLUSH_SECONDS = 2.0


class EpochStream:
    """Callable with an epoch's history rows (``Runtime.on_epoch``); :meth:`close` when training ends."""

    def __init__(self, tracking_uri: str, run_id: str, flush_seconds: float = FLUSH_SECONDS) -> None:
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri)
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.pending: list[Any] = []
        self.last_flush = time.monotonic()
        self.sent = 0
        self.broken = False

    @classmethod
    def for_run(cls, path: Path) -> EpochStream | None:
        """The stream into the MLflow run ``train`` opened (``path``: the run folder's ``mlflow_run.json``), or
        None when it opened none (MLflow was not reachable then)."""
        if not path.exists():
            return None
        named = atomic.read_json(path)
        return cls(named["tracking_uri"], named["run_id"])

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for i, row in enumerate(rows):  # a timestamp each: equal keys and steps (select, final) stay two points
            self.pending += [Metric(k, v, now + i, int(row["epoch"])) for k, v in epoch_curves(row).items()]
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self._flush()

    def close(self) -> None:
        """Send what is left and mark the run's curves as streamed (only when every epoch got through)."""
        self._flush()
        if not self.broken:
            self._guard(lambda: self.client.set_tag(self.run_id, EPOCHS_STREAMED_TAG, "true"))

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        for start in range(0, len(batch), 1000):  # MLflow's limit per log_batch
            chunk = batch[start : start + 1000]
            if self._guard(lambda c=chunk: self.client.log_batch(self.run_id, metrics=c)):
                self.sent += len(chunk)

    def _guard(self, call: Any) -> bool:
        if self.broken:
            return False
        try:
            call()
            return True
        except Exception as exc:  # noqa: BLE001 - training does not depend on MLflow; register logs the curves
            self.broken = True
            log.warning("training curves no longer streamed to MLflow run %s (%s: %s); register logs them",
                        self.run_id, type(exc).__name__, exc)  # fmt: skip
            return False
