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


def write_saved_model(model: Any, folder: str | Path) -> None:
    """``model`` (raw features in) as a SavedModel whose ``serving_default`` takes one tensor per feature.

    What ``model.export`` writes, for less than half its time: Keras' export walks every object reachable
    from the model to find lookup tables, and on the way traces a serving function for every Keras model it
    meets (the servable, its preprocessing, the network and each member's servable: 2.4 s of a 4.5 s
    export on a 28-day window). Here only the lookup layers are walked; the variables are the ones the
    serving function captures, as in ``model.export``. The export stage's fresh-process check proves the
    result serves what the model predicts.
    """
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    for layer in _lookup_layers(model):
        archive.track(layer)
    signature = {name: tf.TensorSpec(tensor.shape, tensor.dtype, name=name) for name, tensor in model.input.items()}
    archive.add_endpoint("serve", model.__call__, input_signature=[signature])
    archive.write_out(str(folder), verbose=False)


def _lookup_layers(model: Any) -> list[Any]:
    """Every StringLookup and IntegerLookup layer of ``model`` and the models inside it (their tables are
    resources a SavedModel must hold), each once."""
    import keras

    found: dict[int, Any] = {}
    pending = [model]
    while pending:
        for layer in pending.pop().layers:
            if isinstance(layer, keras.Model):
                pending.append(layer)
            elif isinstance(layer, keras.layers.StringLookup | keras.layers.IntegerLookup):
                found[id(layer)] = layer
    return list(found.values())


def write_network_saved_model(network: Any, folder: str | Path) -> None:
    """The network alone (encoded features in: numbers normalised, categories as lookup ids) as a SavedModel,
    the source of the TF Lite conversion: TF Lite's built-in ops have no string hash tables (they need the Flex
    delegate, which TensorFlow's Python interpreter no longer links), so on a device the app encodes the features
    with the vocabularies and statistics written beside the ``.tflite`` file and calls the network.

    Nothing is tracked by hand: the network holds no lookup tables, and the endpoint tracks the variables its
    function captures. Tracking the network walked every Keras model inside it (each member) and traced a
    serving function for each: 2.7-2.9 s against 1.0-1.1 s on a 28-day window, for a byte-identical ``.tflite``
    (docs/benchmarks.md)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    signature = {name: tf.TensorSpec(tensor.shape, tensor.dtype, name=name) for name, tensor in network.input.items()}
    archive.add_endpoint("serve", network.__call__, input_signature=[signature])
    archive.write_out(str(folder), verbose=False)
