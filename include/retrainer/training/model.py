"""The model: raw features in, the output of the workload's objective out.

Wide and deep: the objective's head reads the deep part (embeddings and numbers through two ReLU
layers with dropout) beside the wide part (the normalised numbers and a one-hot of every category),
so the network starts from what a linear model can do and the deep part adds interactions. On the
flights data the deep part alone overfits within a few epochs and loses to logistic regression.

Preprocessing (imputation, normalisation, lookups) is a model of its own chained in front of the
network, so the exported SavedModel takes raw features, and on a TPU (which cannot run string
lookups) the same preprocessing runs on the host inside ``tf.data`` while the TPU trains the network.
Checkpoints hold the network's weights only. The preprocessing's tables come from the statistics
and vocabularies the features stage computed, never from ``adapt`` at train time: every worker and retry builds the
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


def raw_inputs(contract: Contract) -> dict[str, Any]:
    """One Keras input per contract feature, shaped [N, 1] in its serving dtype: what the SavedModel takes."""
    import keras

    dtypes = contract.serving_dtypes()
    return {c.name: keras.Input(shape=(1,), name=c.name, dtype=dtypes[c.name]) for c in contract.features}


def build_preprocessing(contract: Contract, stats: dict[str, Any]) -> Any:
    """Raw features -> {name: encoded}: numbers imputed and normalised (float32), categories as lookup ids
    (int64, 0 = out of vocabulary). No trainable weights: on a TPU it runs on the host, in ``tf.data``."""
    import keras

    inputs = raw_inputs(contract)
    out = {}
    for c in contract.by_role(Role.NUMERIC):
        s = stats["numeric"][c.name]
        x = keras.ops.where(keras.ops.isnan(inputs[c.name]), keras.ops.cast(s["mean"], "float32"), inputs[c.name])
        out[c.name] = keras.layers.Normalization(mean=s["mean"], variance=s["variance"], name=f"norm_{c.name}")(x)
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
        out[c.name] = lookup(inputs[c.name])
    return keras.Model(inputs=inputs, outputs=out, name=f"{contract.name}_preprocessing")


def vocabulary_sizes(contract: Contract, stats: dict[str, Any]) -> dict[str, int]:
    """Ids per categorical column: the vocabulary plus the one out-of-vocabulary id."""
    return {c.name: len(stats["vocabulary"][c.name]) + 1 for c in contract.by_role(Role.CATEGORICAL)}


def build_network(
    contract: Contract,
    objective: Objective,
    stats: dict[str, Any],
    hidden_units: int = 64,
    seed: int = 42,
    dropout: float = 0.0,
) -> Any:
    """Encoded features -> the objective's output: every trainable weight of the model."""
    import keras

    keras.utils.set_random_seed(seed)
    sizes = vocabulary_sizes(contract, stats)
    numeric = [c.name for c in contract.by_role(Role.NUMERIC)]
    inputs = {n: keras.Input(shape=(1,), name=n, dtype="float32") for n in numeric}
    inputs |= {n: keras.Input(shape=(1,), name=n, dtype="int64") for n in sizes}
    encoded, wide = [inputs[n] for n in numeric], [inputs[n] for n in numeric]
    for name, size in sizes.items():
        x = keras.layers.Embedding(size, _embedding_dim(size), name=f"embed_{name}")(inputs[name])
        encoded.append(keras.layers.Flatten(name=f"flat_{name}")(x))
        wide.append(keras.layers.CategoryEncoding(size, output_mode="one_hot", name=f"onehot_{name}")(inputs[name]))
    x = keras.layers.Concatenate(name="features")(encoded)
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden_1")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout_1")(x)
    x = keras.layers.Dense(max(4, hidden_units // 2), activation="relu", name="hidden_2")(x)
    x = keras.layers.Dropout(dropout, seed=seed + 1, name="dropout_2")(x)
    x = keras.layers.Concatenate(name="wide_and_deep")([x, *wide])
    return keras.Model(inputs=inputs, outputs=objective.head(x, stats), name=f"{contract.name}_network")


def chain(contract: Contract, preprocessing: Any, network: Any) -> Any:
    """The servable model: raw features through the preprocessing into the network."""
    import keras

    inputs = raw_inputs(contract)
    return keras.Model(inputs=inputs, outputs=network(preprocessing(inputs)), name=contract.name)


def build_model(
    contract: Contract,
    objective: Objective,
    stats: dict[str, Any],
    hidden_units: int = 64,
    seed: int = 42,
    dropout: float = 0.0,
) -> Any:
    """Raw features in, the objective's output out; call it under ``strategy.scope()``. Its ``network``
    attribute holds every trainable weight (what checkpoints save)."""
    network = build_network(contract, objective, stats, hidden_units, seed, dropout)
    model = chain(contract, build_preprocessing(contract, stats), network)
    model.network = network
    return model
