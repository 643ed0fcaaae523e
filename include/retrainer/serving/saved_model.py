"""Predictions of a SavedModel folder exactly as a registered version serves them, without MLflow's loader.

Evaluation scores the champion with this instead of ``mlflow.pyfunc.load_model`` (which would run the
model's Python as found in the artefact store): the pyfunc class is retrainer's own, installed one, given the
checked SavedModel folder, so only the SavedModel comes from the store.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np


class SavedModelScorer:
    """``predict(frame)``: the serving signature's output for a DataFrame of the model's input columns."""

    def __init__(self, folder: str | Path) -> None:
        from retrainer.serving.pyfunc_model import SavedModelPredictor

        self._predictor = SavedModelPredictor()
        self._predictor.load_context(SimpleNamespace(artifacts={"saved_model": str(folder)}))

    def predict(self, frame: Any) -> np.ndarray:
        return self._predictor.predict(None, frame)
