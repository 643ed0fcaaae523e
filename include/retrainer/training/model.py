"""The model: raw features in, the output of the workload's objective out.

Wide and deep: the objective's head reads the deep part (embeddings and numbers through two ReLU
layers with dropout) beside the wide part (the normalised numbers and a one-hot of every category),
so the network starts from what a linear model can do and the deep part adds interactions. On the
flights data the deep part alone overfits within a few epochs and loses to logistic regression.

Preprocessing lives inside the model (imputation, normalisation, lookups, embeddings) so the
exported SavedModel takes raw features. Its tables come from the statistics and vocabularies the
features stage computed, never from ``adapt`` at train time: every worker and retry builds the
same model. The output head is the objective's. :func:`build_model` is the one public entry point;
call it under ``strategy.scope()``.
"""

from __future__ import annotations

import math
from typing import Any

from retrainer.contract import Contract, DType, Role
from retrainer.objectives import Objective


def _embedding_dim(vocab_size: int) -> int:
    return max(2, min(16, math.ceil(vocab_size**0.25) * 2))


def build_model(
    contract: Contract,
    objective: Objective,
    stats: dict[str, Any],
    hidden_units: int = 64,
    seed: int = 42,
    dropout: float = 0.0,
) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    dtypes = contract.serving_dtypes()
    inputs = {c.name: keras.Input(shape=(1,), name=c.name, dtype=dtypes[c.name]) for c in contract.features}
    encoded, wide = [], []
    for c in contract.by_role(Role.NUMERIC):
        s = stats["numeric"][c.name]
        x = inputs[c.name]
        x = keras.ops.where(keras.ops.isnan(x), keras.ops.cast(s["mean"], "float32"), x)
        encoded.append(keras.layers.Normalization(mean=s["mean"], variance=s["variance"], name=f"norm_{c.name}")(x))
        wide.append(encoded[-1])
    for c in contract.by_role(Role.CATEGORICAL):
        vocab = stats["vocabulary"][c.name]
        if not vocab:
            raise ValueError(f"empty vocabulary for categorical column {c.name!r}: the training split has no values")
        if c.dtype == DType.STRING:
            lookup = keras.layers.StringLookup(vocabulary=[str(v) for v in vocab], name=f"lookup_{c.name}")
        else:
            lookup = keras.layers.IntegerLookup(
                vocabulary=[int(v) for v in vocab], vocabulary_dtype="int64", name=f"lookup_{c.name}"
            )
        size = lookup.vocabulary_size()
        ids = lookup(inputs[c.name])
        x = keras.layers.Embedding(size, _embedding_dim(size), name=f"embed_{c.name}")(ids)
        encoded.append(keras.layers.Flatten(name=f"flat_{c.name}")(x))
        wide.append(keras.layers.CategoryEncoding(size, output_mode="one_hot", name=f"onehot_{c.name}")(ids))
    x = keras.layers.Concatenate(name="features")(encoded)
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden_1")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout_1")(x)
    x = keras.layers.Dense(max(4, hidden_units // 2), activation="relu", name="hidden_2")(x)
    x = keras.layers.Dropout(dropout, seed=seed + 1, name="dropout_2")(x)
    x = keras.layers.Concatenate(name="wide_and_deep")([x, *wide])
    return keras.Model(inputs=inputs, outputs=objective.head(x, stats), name=contract.name)
