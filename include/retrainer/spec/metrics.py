"""Streaming evaluation metrics: bounded memory however large the evaluation set.

Each class is updated batch by batch with labels and predictions and reports a flat dict of floats.
Which class a run uses is its workload's objective's choice (``retrainer.spec.objectives``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class BinaryMetrics:
    """AUC (histogram, 2000 thresholds), log loss, accuracy at 0.5 and Brier score."""

    def __init__(self) -> None:
        import keras

        self._m = {
            "auc": keras.metrics.AUC(num_thresholds=2000),
            "log_loss": keras.metrics.BinaryCrossentropy(),
            "accuracy": keras.metrics.BinaryAccuracy(threshold=0.5),
            "brier": keras.metrics.MeanSquaredError(),
        }
        self.rows = 0

    def reset(self) -> None:
        """Back to no rows, keeping the metrics' variables: early stopping scores every epoch, and building an
        AUC of 2000 thresholds costs more than updating it."""
        for m in self._m.values():
            m.reset_state()
        self.rows = 0

    def update(self, y_true: np.ndarray, y_prob: np.ndarray) -> None:
        y = np.asarray(y_true, dtype=np.float32).reshape(-1, 1)
        p = np.asarray(y_prob, dtype=np.float32).reshape(-1, 1)
        if not np.all(np.isfinite(p)):
            raise ValueError("model produced non-finite probabilities")
        p = np.clip(p, 0.0, 1.0)
        for m in self._m.values():
            m.update_state(y, p)
        self.rows += len(y)

    def result(self) -> dict[str, Any]:
        return {name: float(m.result()) for name, m in self._m.items()} | {"rows": self.rows}


class RegressionMetrics:
    """RMSE, MAE, mean error (bias) and R², from running sums in float64."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to no rows."""
        self.rows = 0
        self._sum_sq = self._sum_abs = self._sum_err = self._sum_y = self._sum_y2 = 0.0

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        y = np.asarray(y_true, dtype=np.float64).reshape(-1)
        p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
        if y.shape != p.shape:
            raise ValueError(f"{len(y)} labels but {len(p)} predictions")
        if not np.all(np.isfinite(p)):
            raise ValueError("model produced non-finite predictions")
        err = p - y
        self.rows += len(y)
        self._sum_sq += float(np.sum(err * err))
        self._sum_abs += float(np.sum(np.abs(err)))
        self._sum_err += float(np.sum(err))
        self._sum_y += float(np.sum(y))
        self._sum_y2 += float(np.sum(y * y))

    def result(self) -> dict[str, Any]:
        n = max(self.rows, 1)
        total = self._sum_y2 - self._sum_y**2 / n  # sum of squares around the mean
        return {
            "rmse": (self._sum_sq / n) ** 0.5,
            "mae": self._sum_abs / n,
            "bias": self._sum_err / n,
            "r2": 1.0 - self._sum_sq / total if total > 0 else 0.0,
            "rows": self.rows,
        }
