"""What a training run is given and what it reports: the typed edges of :func:`retrainer.training.loop.train`."""

from __future__ import annotations

import dataclasses
from typing import Any

from retrainer.spec.contract import Contract
from retrainer.spec.model_spec import WIDE_AND_DEEP_ENSEMBLE, ModelSpec
from retrainer.spec.objectives import Objective
from retrainer.training.dataset import DateRange


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """One training run: the data, the model and how to fit it, where to checkpoint.

    With ``validation_days`` each member trains in two phases. *select*: fit on ``fit_days``, score the
    validation days after every epoch, stop after ``patience`` epochs without a better score. *final*: a
    fresh member fitted on the whole training range (validation days included: they are the most recent)
    for the best epoch count, on the same learning-rate schedule as *select* (a cosine over ``epochs``)
    stopped at that epoch. Without, one phase of ``epochs`` epochs on the whole training range. A member
    with a warm start fits its wide part alone first, in every phase that starts from scratch.

    ``batch_size`` is per replica. ``host_preprocessing`` (default: only under TPUStrategy) maps the
    preprocessing model over the input pipeline and trains the network alone on its output, as a TPU
    needs (no string lookups on the TPU).
    """

    train_uri: str
    stats: dict[str, Any]
    contract: Contract
    objective: Objective
    checkpoint_dir: str
    run_key: str
    epochs: int
    batch_size: int
    learning_rate: float
    hidden_units: int
    seed: int
    strategy_name: str
    dropout: float = 0.0
    host_preprocessing: bool | None = None
    precision: str = "float32"
    xla: str = "off"
    fit_days: DateRange | None = None
    validation_days: DateRange | None = None
    patience: int = 4
    model: ModelSpec = WIDE_AND_DEEP_ENSEMBLE
    # checkpoint at most this often (0: every epoch); always at a phase's end and where a member stops
    checkpoint_seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """What one worker's training did; the chief's holds the ensemble checkpoint."""

    chief: bool
    strategy: str
    replicas: int
    dtype_policy: str
    global_batch_size: int
    steps_per_epoch: int
    fit_rows: int
    resumed_from_epoch: int  # where the first phase with epochs left to train started (all done: the last)
    epochs_trained: int
    best_epoch: int
    member_epochs: dict[str, int]
    best_validation: dict[str, float]
    history: list[dict[str, Any]]
    checkpoint: str | None
    tensorboard_dir: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
