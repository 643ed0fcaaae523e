"""A custom training loop that works under every tf.distribute strategy.

Keras 3 ``fit`` breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), so this is the
documented TF path: ``strategy.run`` on a ``tf.function`` step, losses averaged over the global batch,
and a ``tf.train.CheckpointManager`` after every epoch (:mod:`retrainer.training.phase` trains one
member for one phase).

The members of the model spec train together, one traced step updating each on its own loss, each with
its own early stopping (:mod:`retrainer.training.phase`): a selection phase on the fit days picks each
member's epoch count on the validation days, then a final phase on fit and validation days trains each
member for its count. At the end one checkpoint of the whole ensemble (``ensemble/``) holds each
member's final weights, and that is what the run's result names.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer.core import atomic
from retrainer.core.fingerprint import dict_fingerprint, parquet_parts
from retrainer.core.results import TrainingResult, ValidationResult
from retrainer.spec.model_spec import ALL_MEMBERS
from retrainer.training.member import Runtime
from retrainer.training.model import build_model
from retrainer.training.phase import TENSORBOARD, Phase, PhaseOutcome, Trainer, score
from retrainer.training.strategy import (
    apply_compute_settings,
    choose_strategy,
    is_chief_from_env,
    worker_index_from_env,
)
from retrainer.training.train_spec import TrainOutcome, TrainSpec

if TYPE_CHECKING:
    from retrainer.workloads import Workload

__all__ = ["TrainOutcome", "TrainSpec", "load_trained_model", "prepare_checkpoint_dir", "score", "train"]

log = logging.getLogger(__name__)
RUN_KEY_FILE = "run_key.json"
ENSEMBLE = "ensemble"  # every member's final weights in one checkpoint: what the run's result names


def prepare_checkpoint_dir(checkpoint_dir: Path, run_key: str) -> bool:
    """Keep checkpoints only if they belong to this exact training run; returns True when resuming is allowed.
    A folder without a key file is kept: the other workers may already be saving into it."""
    key_file = checkpoint_dir / RUN_KEY_FILE
    if key_file.exists():
        if atomic.read_json(key_file).get("run_key") == run_key:
            return True
        log.info("checkpoints in %s belong to another training run: starting over", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(key_file, {"run_key": run_key})
    return False


def _runtime(spec: TrainSpec, on_epoch: Callable[[list[dict[str, Any]]], None] | None = None) -> Runtime:
    ckpt_dir = Path(spec.checkpoint_dir)
    chief = is_chief_from_env()
    if chief:
        prepare_checkpoint_dir(ckpt_dir, spec.run_key)

    import tensorflow as tf

    strategy = choose_strategy(spec.strategy_name)
    policy = apply_compute_settings(spec.precision, spec.xla, strategy)
    host = spec.host_preprocessing
    # Other workers must save too (MultiWorkerMirroredStrategy); into a folder of their own that a retry
    # reuses and success removes, inside the run's checkpoint folder (shared storage on a cluster).
    return Runtime(
        spec=spec, strategy=strategy, policy=policy,
        host_preprocessing=isinstance(strategy, tf.distribute.TPUStrategy) if host is None else host,
        files=[str(p) for p in parquet_parts(spec.train_uri)], checkpoint_dir=ckpt_dir,
        scratch=None if chief else ckpt_dir / f"_worker-{worker_index_from_env()}", chief=chief,
        on_epoch=on_epoch if chief else None,
    )  # fmt: skip


def _phases(rt: Runtime, trainer: Trainer) -> list[PhaseOutcome]:
    """The selection phase (unless there are no validation days) and the final phase, every member in each."""
    s = rt.spec
    names = list(s.model.member_names)
    if not s.validation_days:
        return [trainer.run(Phase("final", s.fit_days, dict.fromkeys(names, s.epochs)))]
    select = trainer.run(Phase("select", s.fit_days, dict.fromkeys(names, s.epochs), s.validation_days))
    whole = (s.fit_days[0], s.validation_days[1]) if s.fit_days else None
    chosen = {name: max(1, select.members[name].best_epoch) for name in names}
    return [select, trainer.run(Phase("final", whole, chosen))]


def _save_ensemble(rt: Runtime, ensemble: Any, final: PhaseOutcome) -> str:
    """One checkpoint of the whole ensemble (the trained network, training done), each member as its final
    fit ended (a member that stopped before the phase's last epoch kept training in the shared step): what
    serving restores."""
    import tensorflow as tf

    for name, member in final.members.items():
        restored = tf.train.Checkpoint(model=ensemble.get_layer(name)).restore(member.weights)
        restored.expect_partial().assert_existing_objects_matched()
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=ensemble), str(rt.write_dir(ENSEMBLE)), max_to_keep=1
    )
    return str(manager.save(checkpoint_number=1))


def train(spec: TrainSpec, on_epoch: Callable[[list[dict[str, Any]]], None] | None = None) -> TrainOutcome:
    """Train (or resume) the members of ``spec.model`` together, then save the ensemble. ``on_epoch``: called by
    the chief with each epoch's history rows as the epoch ends (the worker's MLflow stream)."""
    rt = _runtime(spec, on_epoch)
    trainer = Trainer(rt)
    phases = _phases(rt, trainer)
    final = phases[-1]
    saved = _save_ensemble(rt, trainer.build.network, final)
    if rt.scratch is not None:
        shutil.rmtree(rt.scratch, ignore_errors=True)
    best_validation = {}
    if len(phases) == 2:
        best_validation = {f"{name}_{rt.val_key}": m.best_score for name, m in phases[0].members.items()}
    return TrainOutcome(
        chief=rt.chief,
        strategy=type(rt.strategy).__name__,
        replicas=rt.replicas,
        dtype_policy=rt.policy,
        global_batch_size=rt.global_batch,
        steps_per_epoch=final.steps_per_epoch,
        fit_rows=final.rows,
        resumed_from_epoch=next((p for p in phases if p.history), final).resumed_from_epoch,
        epochs_trained=sum(m.epochs for p in phases for m in p.members.values()),
        best_epoch=max(m.epochs for m in final.members.values()),
        member_epochs={name: m.epochs for name, m in final.members.items()},
        best_validation=best_validation,
        history=[row for p in phases for row in p.history],
        checkpoint=saved if rt.chief else None,
        tensorboard_dir=str(rt.checkpoint_dir / TENSORBOARD),
    )


def load_trained_model(validated: ValidationResult, training: TrainingResult, workload: Workload) -> Any:
    """The model of a train-stage result: rebuilt from the run's tables with the weights its result names
    (the best epoch's), after checking the checkpoint folder still belongs to that training run."""
    import tensorflow as tf

    key_file = Path(training.checkpoint_dir) / RUN_KEY_FILE
    found = atomic.read_json(key_file).get("run_key") if key_file.exists() else None
    if found != training.run_key:
        raise ValueError(
            f"checkpoints in {training.checkpoint_dir} belong to training run {found}, not {training.run_key} "
            "(retrained since with other data or parameters?): rerun train"
        )
    weights = training.checkpoint or tf.train.latest_checkpoint(training.checkpoint_dir)
    if weights is None or not tf.io.gfile.exists(weights + ".index"):
        raise FileNotFoundError(f"no checkpoint {weights} in {training.checkpoint_dir}: has train run for this date?")
    stats = atomic.read_json(validated.files.stats)
    hidden_units = training.hyperparameters["hidden_units"]
    members = training.hyperparameters.get("members", ALL_MEMBERS)
    files = sorted(Path(weights).parent.glob(Path(weights).name + ".*"))  # the checkpoint's index and data
    key = dict_fingerprint({
        "workload": workload.name, "run_key": training.run_key, "weights": weights, "stats": stats,
        "hidden_units": hidden_units, "members": members,
        "files": [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files],
    })  # fmt: skip
    if key in _LOADED:
        return _LOADED[key]
    spec = workload.model.select(members)
    model = build_model(workload.contract, workload.objective, stats, hidden_units=hidden_units, spec=spec)
    tf.train.Checkpoint(model=model.network).restore(weights).expect_partial().assert_existing_objects_matched()
    while len(_LOADED) >= KEEP_MODELS:
        _LOADED.pop(next(iter(_LOADED)))  # the oldest
    _LOADED[key] = model
    return model


# load_trained_model's last models, by everything each was built from (the checkpoint files' sizes and times too):
# register re-evaluates a run under the promotion lock when the champion moved, in the process that evaluated it,
# and rebuilding the Keras model there costs a second or more of Python while every other promotion waits.
KEEP_MODELS = 4
_LOADED: dict[str, Any] = {}
