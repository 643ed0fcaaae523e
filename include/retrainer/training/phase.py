"""One member's fit in one phase: build it under the strategy, restore or warm-start it, train its epochs.

A phase checkpoints model, optimizer(s) (the optimizer's step drives the cosine learning-rate schedule),
epoch and early-stopping state after every epoch into ``<checkpoints>/<member>/<phase>``; a retried task
restores the latest checkpoint and continues from the next epoch. A non-finite loss or weight fails the
epoch before anything is saved. Only the chief writes to the real folder (and TensorBoard's event files);
other workers save to a scratch folder of their own (MultiWorkerMirroredStrategy needs every worker to
save). Every worker scores the same validation rows with the same weights, so all take the same
early-stopping decision.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

from retrainer.spec.contract import Contract
from retrainer.spec.model_spec import Member
from retrainer.spec.objectives import Objective
from retrainer.training.dataset import DateRange, arrow_to_inputs, count_rows, iter_record_batches, labels, make_dataset
from retrainer.training.member import MemberFit, Runtime, build_member, step_functions
from retrainer.training.model import build_preprocessing

log = logging.getLogger("retrainer.training.loop")
BEST = "best"  # the best epoch's weights (by validation metric), inside a phase's checkpoint folder
TENSORBOARD = "tensorboard"  # the chief's TensorBoard event files, inside the checkpoint folder


@dataclasses.dataclass(frozen=True)
class Phase:
    """One fit: which days, at most how many epochs, scored on which days (None: no early stopping)."""

    name: str  # the checkpoint and TensorBoard subfolder
    days: DateRange | None
    max_epochs: int
    validation: DateRange | None = None


@dataclasses.dataclass(frozen=True)
class PhaseOutcome:
    rows: int
    steps_per_epoch: int
    resumed_from_epoch: int
    epochs: int  # epochs done in all, this attempt's and earlier ones'
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]  # this attempt's epochs
    weights: str | None  # the last checkpoint's prefix


def score(
    model: Any, files: list[str], contract: Contract, objective: Objective, days: DateRange | None = None
) -> dict[str, Any]:
    """The objective's evaluation metrics of ``model`` on the rows of ``files`` (in ``days``), streamed."""
    metrics = objective.eval_metrics()
    for batch in iter_record_batches(files, contract, days=days):
        metrics.update(labels(batch, contract), model(arrow_to_inputs(batch, contract), training=False).numpy())
    return metrics.result()


class ValidationRows:
    """A phase's validation days read once and scored every epoch by one traced function.

    Scoring the same rows each epoch through an eager Keras call cost more than the epoch's training
    (0.17 s against 0.05 s on a 28-day window); the rows are V days whatever the window (memory bounded by
    the validation days, in chunks of at most ``CHUNK_ROWS``), so they are read and converted once.
    """

    def __init__(self, model: Any, files: list[str], contract: Contract, objective: Objective, days: DateRange) -> None:
        import tensorflow as tf

        self.objective = objective
        self.predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        self.chunks = [
            ({k: tf.constant(v) for k, v in arrow_to_inputs(b, contract).items()}, labels(b, contract))
            for b in iter_record_batches(files, contract, days=days)
        ]
        if not self.chunks:
            raise ValueError(f"no validation rows in {days}: early stopping has nothing to score")

    def score(self) -> dict[str, Any]:
        """The objective's evaluation metrics of the model, with its current weights, on these rows."""
        metrics = self.objective.eval_metrics()
        for x, y in self.chunks:
            metrics.update(y, self.predict(x).numpy())
        return metrics.result()


def all_finite(variables: list[Any]) -> bool:
    import tensorflow as tf

    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables)


def _warm_start(member: Member, phase: Phase, fit: MemberFit, warm: Any, iterator: Any) -> None:
    """The wide part alone first, so early stopping finds a converged linear model to build on."""
    t0 = time.perf_counter()
    losses = [float(warm(iterator)) for _ in range(fit.warm_steps)]
    if not math.isfinite(losses[-1]) or not all_finite(fit.wide):
        raise FloatingPointError(f"{member.name}: the warm start of the wide part diverged: loss {losses[-1]}")
    log.info(
        "%s %s: warm start, the wide part alone for %d epochs: loss %.4f -> %.4f (%.1fs)",
        member.name, phase.name, member.warm_start_epochs, losses[0], losses[-1], time.perf_counter() - t0,
    )  # fmt: skip


def run_phase(rt: Runtime, member: Member, phase: Phase) -> PhaseOutcome:
    """Train (or resume) one member for one phase; returns its epochs and its last checkpoint."""
    import tensorflow as tf

    s = rt.spec
    rows = count_rows(rt.files, s.contract, phase.days) if phase.days else int(s.stats["rows"])
    if rows == 0:
        raise ValueError(f"no training rows in {phase.days} of {s.train_uri}")
    steps = max(1, rows // rt.global_batch)
    host = build_preprocessing(s.contract, s.stats) if rt.host_preprocessing else None

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = rt.files[ctx.input_pipeline_id :: ctx.num_input_pipelines]
        per_replica = ctx.get_per_replica_batch_size(rt.global_batch)
        ds = make_dataset(shard, s.contract, per_replica, seed=s.seed + ctx.input_pipeline_id, repeat=True,
                          days=phase.days)  # fmt: skip
        return ds if host is None else ds.map(lambda x, y: (host(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    dist_ds = rt.strategy.distribute_datasets_from_function(dataset_fn)
    fit = build_member(rt, member, steps, host)
    real_dir = rt.checkpoint_dir / member.name / phase.name
    write_dir = rt.write_dir(member.name, phase.name)
    manager = tf.train.CheckpointManager(fit.checkpoint, str(write_dir), max_to_keep=2)
    best = tf.train.CheckpointManager(tf.train.Checkpoint(model=fit.weights), str(write_dir / BEST), max_to_keep=1)
    latest = tf.train.latest_checkpoint(str(real_dir))
    if latest:
        fit.checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("%s %s: resumed from %s at epoch %d", member.name, phase.name, latest, int(fit.epoch.numpy()))
    board_dir = str(rt.checkpoint_dir / TENSORBOARD / member.name / phase.name)
    board = tf.summary.create_file_writer(board_dir) if rt.chief else tf.summary.create_noop_writer()
    step, warm = step_functions(rt, fit)
    iterator = iter(dist_ds)
    start_epoch = int(fit.epoch.numpy())
    if warm is not None and start_epoch == 0:  # a resumed attempt restores weights that were warm-started
        _warm_start(member, phase, fit, warm, iterator)
    validation = None
    if phase.validation:
        validation = ValidationRows(fit.scorer, rt.files, s.contract, s.objective, phase.validation)
    history = _epochs(rt, member, phase, fit, step, iterator, steps, (manager, best), board, validation)
    return PhaseOutcome(
        rows=rows, steps_per_epoch=steps, resumed_from_epoch=start_epoch, epochs=int(fit.epoch.numpy()),
        best_epoch=int(fit.best_epoch.numpy()), best_score=float(fit.best_score.numpy()), history=history,
        weights=tf.train.latest_checkpoint(str(write_dir)),
    )  # fmt: skip


def _epochs(
    rt: Runtime, member: Member, phase: Phase, fit: MemberFit, step: Any, iterator: Any, steps: int,
    managers: tuple[Any, Any], board: Any, validation: ValidationRows | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The phase's remaining epochs: train, check, score, save, log; stop early after ``patience``."""
    import tensorflow as tf

    s, (manager, best), history = rt.spec, managers, []
    for e in range(int(fit.epoch.numpy()), phase.max_epochs):
        if phase.validation and int(fit.best_epoch.numpy()) > 0 and e - int(fit.best_epoch.numpy()) >= s.patience:
            break  # stopped early (a resumed attempt finds it so from the restored state)
        t0 = time.perf_counter()
        fit.metric.reset_state()
        loss = sum(float(step(iterator)) for _ in range(steps)) / steps
        seconds = time.perf_counter() - t0
        # Before anything is saved: a retry must never resume from (or export) diverged weights.
        if not math.isfinite(loss) or not all_finite(fit.variables):
            raise FloatingPointError(
                f"training diverged in epoch {e + 1} ({member.name} {phase.name}): loss {loss}; nothing of "
                f"this epoch was saved (lower the learning rate {s.learning_rate}?)"
            )
        row: dict[str, Any] = {
            "member": member.name, "phase": phase.name, "epoch": e + 1, "loss": loss,
            rt.metric_key: float(fit.metric.result()),
            "learning_rate": float(fit.schedule(fit.optimizer.iterations)), "seconds": round(seconds, 2),
            "examples_per_second": round(steps * rt.global_batch / seconds, 1),
        }  # fmt: skip
        if validation is not None:
            scores = validation.score()
            row[rt.val_key] = float(scores[s.objective.headline])
            if int(fit.best_epoch.numpy()) == 0 or rt.better(row[rt.val_key], float(fit.best_score.numpy())):
                best.save(checkpoint_number=e + 1)
                fit.best_score.assign(row[rt.val_key])
                fit.best_epoch.assign(e + 1)
        fit.epoch.assign(e + 1)
        manager.save(checkpoint_number=e + 1)
        with board.as_default(step=e + 1):
            for name, value in row.items():
                if name not in ("member", "phase", "epoch"):
                    tf.summary.scalar(name, value)
        board.flush()
        history.append(row)
        log.info(
            "%s %s epoch %d/%d loss=%.4f %s=%.4f%s %.1fs %.0f ex/s",
            member.name, phase.name, e + 1, phase.max_epochs, loss, rt.metric_key, row[rt.metric_key],
            f" {rt.val_key}={row[rt.val_key]:.4f}" if rt.val_key in row else "", seconds, row["examples_per_second"],
        )  # fmt: skip
    return history
