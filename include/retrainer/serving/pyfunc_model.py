"""MLflow "model from code": a pyfunc that serves the exported SavedModel itself.

MLflow's keras/tensorflow flavors store a ``.keras`` file and fail on string inputs; this wrapper
loads the SavedModel folder logged as an artifact and feeds its serving signature, reading the
input names and dtypes from the signature, so it needs nothing from retrainer at load time.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


def to_signature_inputs(model_input: Any, specs: dict[str, Any]) -> dict[str, Any]:
    """A DataFrame or dict of columns -> tensors of shape [N, 1] in the signature's dtypes."""
    import tensorflow as tf

    out = {}
    for name, spec in specs.items():
        values = model_input[name]
        values = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
        values = values.reshape(-1, 1) if values.ndim == 1 else values
        if spec.dtype == tf.string:
            arr = np.where(values == None, "", values).astype(str)  # noqa: E711
            out[name] = tf.constant(arr, dtype=tf.string)
        elif spec.dtype.is_integer:
            out[name] = tf.constant(values.astype(np.int64), dtype=spec.dtype)
        else:
            out[name] = tf.constant(np.asarray(values, dtype=np.float64).astype(np.float32), dtype=spec.dtype)
    return out


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
