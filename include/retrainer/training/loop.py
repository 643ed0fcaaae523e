"""A custom training loop that works under every tf.distribute strategy.

Keras 3 ``fit`` breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), so this is the
documented TF path: ``strategy.run`` on a ``tf.function`` step, losses averaged over the global
batch, and a ``tf.train.CheckpointManager`` saving model, optimizer (its step drives the cosine
learning-rate schedule), epoch and early-stopping state after every epoch. A retried task restores
the latest checkpoint and continues from the next epoch. A non-finite loss or weight fails the epoch
before anything is saved. Only the chief writes to the real checkpoint folder (and TensorBoard's
event files); other workers save to a temporary one (required by MWMS). Every worker scores the same
validation rows with the same weights, so all of them take the same early-stopping decision.

The members of the workload's model spec train one after the other, each on its own loss, with its own
early stopping and checkpoint folder (``<member>/<phase>``); at the end one checkpoint of the whole
ensemble (``ensemble/``) holds each member's final weights, and that is what the run's result names.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer.core import atomic
from retrainer.core.fingerprint import parquet_parts
from retrainer.core.results import TrainingResult, ValidationResult
from retrainer.spec.contract import Contract
from retrainer.spec.model_spec import ALL_MEMBERS, WIDE_AND_DEEP_ENSEMBLE, Member, ModelSpec
from retrainer.spec.objectives import Objective
from retrainer.training.dataset import (
    DateRange,
    arrow_to_inputs,
    count_rows,
    iter_record_batches,
    labels,
    make_dataset,
)
from retrainer.training.model import (
    WIDE_LOGIT,
    build_model,
    build_network,
    build_preprocessing,
    chain,
)
from retrainer.training.strategy import (
    apply_compute_settings,
    choose_strategy,
    is_chief_from_env,
    worker_index_from_env,
)

if TYPE_CHECKING:
    from retrainer.workloads import Workload

log = logging.getLogger(__name__)
RUN_KEY_FILE = "run_key.json"
BEST = "best"  # the best epoch's weights (by validation metric), inside a phase's checkpoint folder
TENSORBOARD = "tensorboard"  # the chief's TensorBoard event files, inside the checkpoint folder
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


def score(
    model: Any, files: list[str], contract: Contract, objective: Objective, days: DateRange | None = None
) -> dict[str, Any]:
    """The objective's evaluation metrics of ``model`` on the rows of ``files`` (in ``days``), streamed."""
    metrics = objective.eval_metrics()
    for batch in iter_record_batches(files, contract, days=days):
        metrics.update(labels(batch, contract), model(arrow_to_inputs(batch, contract), training=False).numpy())
    return metrics.result()


def _all_finite(variables: list[Any]) -> bool:
    import tensorflow as tf

    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One fit: which days, at most how many epochs, scored on which days (None: no early stopping)."""

    name: str  # the checkpoint and TensorBoard subfolder
    days: DateRange | None
    max_epochs: int
    validation: DateRange | None = None


def train(
    *,
    train_uri: str,
    stats: dict[str, Any],
    contract: Contract,
    objective: Objective,
    checkpoint_dir: str,
    run_key: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    hidden_units: int,
    seed: int,
    strategy_name: str,
    dropout: float = 0.0,
    host_preprocessing: bool | None = None,
    precision: str = "float32",
    xla: str = "off",
    fit_days: DateRange | None = None,
    validation_days: DateRange | None = None,
    patience: int = 4,
    spec: ModelSpec = WIDE_AND_DEEP_ENSEMBLE,
) -> dict[str, Any]:
    """Train (or resume) each member, save the ensemble and return a small summary. ``batch_size`` is per
    replica.

    Per member, with ``validation_days`` training has two phases. *select*: fit on ``fit_days``, score the
    validation days after every epoch, stop after ``patience`` epochs without a better score. *final*: a
    fresh member fitted on the whole training range (validation days included: they are the most recent)
    for the best epoch count, on the same learning-rate schedule as *select* (a cosine over ``epochs``)
    stopped at that epoch. Without, one phase of ``epochs`` epochs on the whole training range. A member
    with a warm start fits its wide part alone first, in every phase that starts from scratch.

    ``host_preprocessing`` (default: only under TPUStrategy) maps the preprocessing model over the input
    pipeline and trains the network alone on its output, as a TPU needs (no string lookups on the TPU).
    """
    ckpt_dir = Path(checkpoint_dir)
    chief = is_chief_from_env()
    if chief:
        prepare_checkpoint_dir(ckpt_dir, run_key)

    import keras
    import tensorflow as tf

    strategy = choose_strategy(strategy_name)
    policy = apply_compute_settings(precision, xla, strategy)
    replicas = strategy.num_replicas_in_sync
    if host_preprocessing is None:
        host_preprocessing = isinstance(strategy, tf.distribute.TPUStrategy)
    global_batch = batch_size * replicas
    files = [str(p) for p in parquet_parts(train_uri)]
    # Other workers must save too (MultiWorkerMirroredStrategy); into a folder of their own that a retry
    # reuses and success removes, inside the run's checkpoint folder (shared storage on a cluster).
    scratch = None if chief else ckpt_dir / f"_worker-{worker_index_from_env()}"
    metric_key = f"train_{objective.train_metric_name}"
    val_key = f"val_{objective.headline}"
    better = (lambda a, b: a > b) if objective.higher_is_better else (lambda a, b: a < b)

    def run_phase(member: Member, phase: Phase) -> dict[str, Any]:
        rows = count_rows(files, contract, phase.days) if phase.days else int(stats["rows"])
        if rows == 0:
            raise ValueError(f"no training rows in {phase.days} of {train_uri}")
        steps = max(1, rows // global_batch)

        host = build_preprocessing(contract, stats) if host_preprocessing else None

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            shard = files[ctx.input_pipeline_id :: ctx.num_input_pipelines]
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            ds = make_dataset(
                shard, contract, per_replica, seed=seed + ctx.input_pipeline_id, repeat=True, days=phase.days
            )
            if host is not None:
                ds = ds.map(lambda x, y: (host(x), y), num_parallel_calls=tf.data.AUTOTUNE)
            return ds

        dist_ds = strategy.distribute_datasets_from_function(dataset_fn)
        with strategy.scope():
            if host is None:
                full = build_model(contract, objective, stats, hidden_units, seed, dropout, spec)
                model = full.members[member.name]  # raw features -> this member's output
                weights = full.network.get_layer(member.name)
            else:
                network = build_network(contract, objective, stats, hidden_units, seed, dropout, spec)
                model = network.members[member.name]  # encoded features -> this member's output
                weights = network.get_layer(member.name)
            variables = weights.trainable_variables
            wide = [v for v in variables if v.path.startswith(f"{WIDE_LOGIT}/")]
            # The cosine spans the configured epochs in both phases: the final fit follows the selection
            # fit's learning rates up to the chosen epoch, so "the best epoch count" means the same in both.
            schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps, alpha=0.05)
            optimizer = keras.optimizers.Adam(learning_rate=schedule)
            if policy == "mixed_float16":  # float16 gradients underflow without a dynamic loss scale
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizers = {"optimizer": optimizer}
            if member.wide_optimizer == "adagrad":
                adam_variables = [v for v in variables if all(v is not w for w in wide)]
                optimizers["wide_optimizer"] = keras.optimizers.Adagrad(learning_rate=spec.adagrad_learning_rate)
                optimizers["wide_optimizer"].build(wide)
            elif member.wide_optimizer == "adam":
                adam_variables = variables
            else:
                raise ValueError(f"member {member.name}: unknown wide optimizer {member.wide_optimizer!r}")
            optimizer.build(adam_variables)
            warm_steps = member.warm_start_epochs * steps
            if warm_steps:
                warm_schedule = keras.optimizers.schedules.CosineDecay(
                    spec.warm_start_learning_rate, warm_steps, alpha=0.05
                )
                warm_optimizer = keras.optimizers.Adam(learning_rate=warm_schedule)
                warm_optimizer.build(wide)
            metric = objective.train_metric()
            epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            best_score = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="best_score")
            best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
            checkpoint = tf.train.Checkpoint(
                model=weights, epoch=epoch, best_score=best_score, best_epoch=best_epoch, **optimizers
            )
        scorer = model if host is None else chain(contract, host, model)  # raw features in
        real_dir = ckpt_dir / member.name / phase.name
        write_dir = real_dir if scratch is None else scratch / member.name / phase.name
        manager = tf.train.CheckpointManager(checkpoint, str(write_dir), max_to_keep=2)
        best = tf.train.CheckpointManager(tf.train.Checkpoint(model=weights), str(write_dir / BEST), max_to_keep=1)
        latest = tf.train.latest_checkpoint(str(real_dir))
        if latest:
            checkpoint.restore(latest).assert_existing_objects_matched()
            log.info("%s %s: resumed from %s at epoch %d", member.name, phase.name, latest, int(epoch.numpy()))
        board = (
            tf.summary.create_file_writer(str(ckpt_dir / TENSORBOARD / member.name / phase.name))
            if chief
            else tf.summary.create_noop_writer()
        )

        def member_loss(x: dict[str, tf.Tensor], y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            p = tf.cast(model(x, training=True), tf.float32)
            return p, tf.nn.compute_average_loss(objective.per_example_loss(y, p), global_batch_size=global_batch)

        def step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape(persistent="wide_optimizer" in optimizers) as tape:
                p, loss = member_loss(x, y)
                scaled = optimizer.scale_loss(loss)  # the loss itself unless a LossScaleOptimizer
            grads = tape.gradient(scaled, adam_variables)
            optimizer.apply_gradients(zip(grads, adam_variables, strict=True))
            if "wide_optimizer" in optimizers:  # float32 layers: the unscaled loss's gradients
                optimizers["wide_optimizer"].apply_gradients(zip(tape.gradient(loss, wide), wide, strict=True))
            metric.update_state(y, p)
            return loss

        def warm_step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                _, loss = member_loss(x, y)
            warm_optimizer.apply_gradients(zip(tape.gradient(loss, wide), wide, strict=True))
            return loss

        def distributed(fn: Any) -> Any:
            @tf.function
            def run(iterator: Any) -> tf.Tensor:
                x, y = next(iterator)
                return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(fn, args=(x, y)), axis=None)

            return run

        distributed_step = distributed(step)
        iterator = iter(dist_ds)
        history = []
        start_epoch = int(epoch.numpy())
        if warm_steps and start_epoch == 0:  # a resumed attempt restores weights that were warm-started
            t0 = time.perf_counter()
            warm = distributed(warm_step)
            losses = [float(warm(iterator)) for _ in range(warm_steps)]
            if not math.isfinite(losses[-1]) or not _all_finite(wide):
                raise FloatingPointError(f"{member.name}: the warm start of the wide part diverged: loss {losses[-1]}")
            log.info(
                "%s %s: warm start, the wide part alone for %d epochs: loss %.4f -> %.4f (%.1fs)",
                member.name, phase.name, member.warm_start_epochs, losses[0], losses[-1], time.perf_counter() - t0,
            )  # fmt: skip
        for e in range(start_epoch, phase.max_epochs):
            if phase.validation and int(best_epoch.numpy()) > 0 and e - int(best_epoch.numpy()) >= patience:
                break  # stopped early (a resumed attempt finds it so from the restored state)
            t0 = time.perf_counter()
            metric.reset_state()
            total = 0.0
            for _ in range(steps):
                total += float(distributed_step(iterator))
            seconds = time.perf_counter() - t0
            loss = total / steps
            # Before anything is saved: a retry must never resume from (or export) diverged weights.
            if not math.isfinite(loss) or not _all_finite(variables):
                raise FloatingPointError(
                    f"training diverged in epoch {e + 1} ({member.name} {phase.name}): loss {loss}; nothing of "
                    f"this epoch was saved (lower the learning rate {learning_rate}?)"
                )
            row: dict[str, Any] = {
                "member": member.name,
                "phase": phase.name,
                "epoch": e + 1,
                "loss": loss,
                metric_key: float(metric.result()),
                "learning_rate": float(schedule(optimizer.iterations)),
                "seconds": round(seconds, 2),
                "examples_per_second": round(steps * global_batch / seconds, 1),
            }
            if phase.validation:
                row[val_key] = float(score(scorer, files, contract, objective, phase.validation)[objective.headline])
                if int(best_epoch.numpy()) == 0 or better(row[val_key], float(best_score.numpy())):
                    best.save(checkpoint_number=e + 1)
                    best_score.assign(row[val_key])
                    best_epoch.assign(e + 1)
            epoch.assign(e + 1)
            manager.save(checkpoint_number=e + 1)
            with board.as_default(step=e + 1):
                for name, value in row.items():
                    if name not in ("member", "phase", "epoch"):
                        tf.summary.scalar(name, value)
            board.flush()
            history.append(row)
            log.info(
                "%s %s epoch %d/%d loss=%.4f %s=%.4f%s %.1fs %.0f ex/s",
                member.name, phase.name, e + 1, phase.max_epochs, loss, metric_key, row[metric_key],
                f" {val_key}={row[val_key]:.4f}" if val_key in row else "", seconds, row["examples_per_second"],
            )  # fmt: skip
        return {
            "rows": rows,
            "steps_per_epoch": steps,
            "resumed_from_epoch": start_epoch,
            "epochs": int(epoch.numpy()),
            "best_epoch": int(best_epoch.numpy()),
            "best_score": float(best_score.numpy()),
            "history": history,
            "weights": tf.train.latest_checkpoint(str(write_dir)),
        }

    phases, finals, best_validation = [], {}, {}
    for member in spec.members:
        if validation_days:
            select = run_phase(member, Phase("select", fit_days, epochs, validation_days))
            phases.append(select)
            best_validation[f"{member.name}_{val_key}"] = select["best_score"]
            whole = (fit_days[0], validation_days[1]) if fit_days else None
            finals[member.name] = run_phase(member, Phase("final", whole, max(1, select["best_epoch"])))
        else:
            finals[member.name] = run_phase(member, Phase("final", fit_days, epochs))
        phases.append(finals[member.name])

    # One checkpoint of the whole ensemble, each member at the end of its final fit: what serving restores.
    with strategy.scope():
        ensemble = (
            build_model(contract, objective, stats, hidden_units, seed, dropout, spec).network
            if not host_preprocessing
            else build_network(contract, objective, stats, hidden_units, seed, dropout, spec)
        )
    for name, final in finals.items():
        restored = tf.train.Checkpoint(model=ensemble.get_layer(name)).restore(final["weights"])
        restored.expect_partial().assert_existing_objects_matched()
    ensemble_dir = ckpt_dir / ENSEMBLE if scratch is None else scratch / ENSEMBLE
    saved = tf.train.CheckpointManager(tf.train.Checkpoint(model=ensemble), str(ensemble_dir), max_to_keep=1).save(
        checkpoint_number=1
    )
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    # The attempt resumed where the first phase with epochs left to train started (all done: the last phase).
    resumed = next((p for p in phases if p["history"]), phases[-1])["resumed_from_epoch"]
    return {
        "chief": chief,
        "strategy": type(strategy).__name__,
        "replicas": replicas,
        "dtype_policy": policy,
        "global_batch_size": global_batch,
        "steps_per_epoch": phases[-1]["steps_per_epoch"],
        "fit_rows": phases[-1]["rows"],
        "resumed_from_epoch": resumed,
        "epochs_trained": sum(p["epochs"] for p in phases),
        "best_epoch": max(f["epochs"] for f in finals.values()),
        "member_epochs": {name: f["epochs"] for name, f in finals.items()},
        "best_validation": best_validation,
        "history": [row for p in phases for row in p["history"]],
        "checkpoint": saved if chief else None,
        "tensorboard_dir": str(ckpt_dir / TENSORBOARD),
    }


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
    spec = workload.model.select(training.hyperparameters.get("members", ALL_MEMBERS))
    model = build_model(workload.contract, workload.objective, stats, hidden_units=hidden_units, spec=spec)
    tf.train.Checkpoint(model=model.network).restore(weights).expect_partial().assert_existing_objects_matched()
    return model
