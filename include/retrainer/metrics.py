"""Streaming binary-classification metrics: bounded memory however large the evaluation set."""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("auc", "log_loss", "accuracy", "brier")


class BinaryMetrics:
    """AUC (histogram, 2000 thresholds), log loss, accuracy at 0.5 and Brier score, updated per batch."""

    def __init__(self) -> None:
        import keras

        self._m = {
            "auc": keras.metrics.AUC(num_thresholds=2000),
            "log_loss": keras.metrics.BinaryCrossentropy(),
            "accuracy": keras.metrics.BinaryAccuracy(threshold=0.5),
            "brier": keras.metrics.MeanSquaredError(),
        }
        self.rows = 0

    def update(self, y_true: np.ndarray, y_prob: np.ndarray) -> None:
        y = np.asarray(y_true, dtype=np.float32).reshape(-1, 1)
        p = np.clip(np.asarray(y_prob, dtype=np.float32).reshape(-1, 1), 0.0, 1.0)
        if not np.all(np.isfinite(p)):
            raise ValueError("model produced non-finite probabilities")
        for m in self._m.values():
            m.update_state(y, p)
        self.rows += len(y)

    def result(self) -> dict[str, Any]:
        return {name: float(m.result()) for name, m in self._m.items()} | {"rows": self.rows}
