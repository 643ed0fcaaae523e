"""Columns -> the tensors a SavedModel's serving signature takes.

Shared by the MLflow pyfunc (logged as its code path) and the export stage's fresh-process check, and
kept free of MLflow and of retrainer imports: the check's process imports only TensorFlow, so it is
ready sooner, and the logged model loads where retrainer is not installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
