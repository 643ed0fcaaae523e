"""MLflow "model from code": a pyfunc that serves the exported SavedModel itself.

MLflow's keras/tensorflow flavors store a ``.keras`` file and fail on string inputs; this wrapper
loads the SavedModel folder logged as an artifact and feeds its serving signature, reading the
input names and dtypes from the signature, so it needs nothing from retrainer at load time: the one helper
it shares with the export check, ``signature_inputs.py``, is logged beside it as a code path (MLflow puts
that folder on ``sys.path`` before it runs this file).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

try:
    from retrainer.serving.signature_inputs import to_signature_inputs
except ImportError:  # loaded by MLflow where retrainer is not installed: the logged code path has it
    from signature_inputs import to_signature_inputs  # type: ignore[no-redef]


class SavedModelPredictor(PythonModel):
    def load_context(self, context: Any) -> None:
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts["saved_model"])
        self._serve = self._model.signatures["serving_default"]
        self._specs = self._serve.structured_input_signature[1]

    # No type hints here on purpose: MLflow would try to infer a signature from them.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        outputs = self._serve(**to_signature_inputs(model_input, self._specs))
        return next(iter(outputs.values())).numpy().reshape(-1).astype(np.float64)


mlflow.models.set_model(SavedModelPredictor())
