"""A custom training loop that works under every tf.distribute strategy.

Keras 3 ``fit`` breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), so this is the
documented TF path: ``strategy.run`` on a ``tf.function`` step, losses averaged over the global
batch, and a ``tf.train.CheckpointManager`` saving model, optimizer and epoch after every epoch.
A retried task restores the latest checkpoint and continues from the next epoch. Only the chief
writes to the real checkpoint folder; other workers save to a temporary one (required by MWMS).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer import atomic
from retrainer.contract import Contract
from retrainer.fingerprint import parquet_parts
from retrainer.objectives import Objective
from retrainer.results import TrainingResult, ValidationResult
from retrainer.training.data import make_dataset
from retrainer.training.model import build_model
from retrainer.training.strategy import choose_strategy, is_chief_from_env

if TYPE_CHECKING:
    from retrainer.workloads import Workload

log = logging.getLogger(__name__)
RUN_KEY_FILE = "run_key.json"


def prepare_checkpoint_dir(checkpoint_dir: Path, run_key: str) -> bool:
    """Keep checkpoints only if they belong to this exact training run; returns True when resuming is allowed."""
    key_file = checkpoint_dir / RUN_KEY_FILE
    if key_file.exists() and atomic.read_json(key_file).get("run_key") == run_key:
        return True
    if checkpoint_dir.exists():
        log.info("checkpoints in %s belong to another training run: starting over", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    atomic.write_json(key_file, {"run_key": run_key})
    return False


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
) -> dict[str, Any]:
    """Train (or resume) and return a small summary. ``batch_size`` is per replica."""
    ckpt_dir = Path(checkpoint_dir)
    chief = is_chief_from_env()
    if chief:
        prepare_checkpoint_dir(ckpt_dir, run_key)

    import keras
    import tensorflow as tf

    strategy = choose_strategy(strategy_name)
    replicas = strategy.num_replicas_in_sync
    global_batch = batch_size * replicas
    steps_per_epoch = max(1, stats["rows"] // global_batch)
    files = [str(p) for p in parquet_parts(train_uri)]

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = files[ctx.input_pipeline_id :: ctx.num_input_pipelines]
        return make_dataset(
            shard,
            contract,
            ctx.get_per_replica_batch_size(global_batch),
            seed=seed + ctx.input_pipeline_id,
            repeat=True,
        )

    dist_ds = strategy.distribute_datasets_from_function(dataset_fn)

    with strategy.scope():
        model = build_model(contract, objective, stats, hidden_units=hidden_units, seed=seed)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        optimizer.build(model.trainable_variables)
        metric = objective.train_metric()
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)

    write_dir = ckpt_dir if chief else Path(tempfile.mkdtemp(prefix="retrainer-worker-ckpt-"))
    manager = tf.train.CheckpointManager(checkpoint, str(write_dir), max_to_keep=2)
    latest = tf.train.latest_checkpoint(str(ckpt_dir))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("resumed from %s at epoch %d", latest, int(epoch.numpy()))

    def step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            per_example = objective.per_example_loss(y, p)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        metric.update_state(y, p)
        return loss

    @tf.function
    def distributed_step(iterator: Any) -> tf.Tensor:
        x, y = next(iterator)
        per_replica = strategy.run(step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    iterator = iter(dist_ds)
    history = []
    start_epoch = int(epoch.numpy())
    metric_key = f"train_{objective.train_metric_name}"
    for e in range(start_epoch, epochs):
        t0 = time.perf_counter()
        metric.reset_state()
        total = 0.0
        for _ in range(steps_per_epoch):
            total += float(distributed_step(iterator))
        seconds = time.perf_counter() - t0
        loss = total / steps_per_epoch
        epoch.assign(e + 1)
        manager.save(checkpoint_number=e + 1)
        row = {
            "epoch": e + 1,
            "loss": loss,
            metric_key: float(metric.result()),
            "seconds": round(seconds, 2),
            "examples_per_second": round(steps_per_epoch * global_batch / seconds, 1),
        }
        history.append(row)
        log.info(
            "epoch %d/%d loss=%.4f %s=%.4f %.1fs %.0f ex/s",
            e + 1,
            epochs,
            loss,
            metric_key,
            row[metric_key],
            seconds,
            row["examples_per_second"],
        )
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    if any(not math.isfinite(h["loss"]) for h in history):
        raise FloatingPointError(f"training diverged: non-finite loss in {history}")
    return {
        "chief": chief,
        "strategy": type(strategy).__name__,
        "replicas": replicas,
        "global_batch_size": global_batch,
        "steps_per_epoch": steps_per_epoch,
        "resumed_from_epoch": start_epoch,
        "history": history,
        "checkpoint": tf.train.latest_checkpoint(str(ckpt_dir)) if chief else None,
    }


def load_trained_model(validated: ValidationResult, training: TrainingResult, workload: Workload) -> Any:
    """The model of a train-stage result: rebuilt from the run's tables, the newest checkpoint's weights."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(training.checkpoint_dir)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {training.checkpoint_dir}: has the train stage run for this date?")
    stats = atomic.read_json(validated.files.stats)
    hidden_units = training.hyperparameters["hidden_units"]
    model = build_model(workload.contract, workload.objective, stats, hidden_units=hidden_units)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model
