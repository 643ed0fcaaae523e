"""One phase (select or final) of every member together: build, restore or warm-start, train the epochs.

All members train in one step on the same batches, each on its own loss with its own optimizer(s) and
its own stopping point: in the selection phase a member stops ``patience`` epochs after its best
validation score; in the final phase it stops at the epoch count its selection chose, and its weights
at that epoch are saved to ``<checkpoints>/<phase>/<member>``. A member that has stopped is no longer
scored, logged or checked, and the phase ends when every member has stopped; the step keeps updating
it (its weights past its stop are never used), which costs less than a new trace.

The members are built and their steps traced once for the run (:class:`Trainer`); the final phase
restarts them from the state a checkpoint taken right after the build holds (weights, optimizers, the
dropout generators, early stopping), so a phase trains the same whether it runs first or after another.

The phase checkpoints the epoch, each member's weights, optimizer(s) (their step drives the cosine
learning-rate schedule) and early-stopping state into ``<checkpoints>/<phase>`` after its last epoch and
after any epoch that ends ``checkpoint_seconds`` or more after the previous checkpoint (0: every epoch;
always every epoch under MultiWorkerMirroredStrategy, whose workers save together), like Estimator's
``save_checkpoints_secs``; a retried task restores the latest and continues from the next epoch. A non-finite
loss or weight of a member still training fails the epoch before anything is saved. Only the
chief writes to the real folder (and TensorBoard's event files); other workers save to a scratch folder
of their own (MultiWorkerMirroredStrategy needs every worker to save). Every worker scores the same
validation rows with the same weights, so all take the same early-stopping decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

from retrainer.spec.contract import Contract
from retrainer.spec.objectives import Objective
from retrainer.training.dataset import DateRange, arrow_to_inputs, count_rows, iter_record_batches, labels, make_dataset
from retrainer.training.member import Build, MemberFit, Runtime, build_members, step_functions
from retrainer.training.model import build_preprocessing

log = logging.getLogger("retrainer.training.loop")
VALIDATION_CHUNK_ROWS = 65536  # validation rows scored per call (V days of them, held in memory anyway)
TENSORBOARD = "tensorboard"  # the chief's TensorBoard event files, inside the checkpoint folder


@dataclasses.dataclass(frozen=True)
class Phase:
    """One fit of every member: which days, scored on which days (None: no early stopping), and each
    member's most epochs (in the final phase, the count its selection chose)."""

    name: str  # the checkpoint and TensorBoard subfolder
    days: DateRange | None
    max_epochs: dict[str, int]  # member name -> at most this many epochs, in the model's member order
    validation: DateRange | None = None


@dataclasses.dataclass(frozen=True)
class MemberOutcome:
    epochs: int  # the epochs this member trained in the phase, this attempt's and earlier ones'
    best_epoch: int  # by validation score; 0 without validation
    best_score: float
    weights: str | None  # its weights where it stopped (the final phase), else None


@dataclasses.dataclass(frozen=True)
class PhaseOutcome:
    rows: int
    steps_per_epoch: int
    resumed_from_epoch: int
    members: dict[str, MemberOutcome]
    history: list[dict[str, Any]]  # this attempt's epochs: one row per member still training, epoch by epoch


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
    the validation days), so they are read and converted once, in chunks of ``VALIDATION_CHUNK_ROWS``.
    """

    def __init__(
        self, predict: Any, files: list[str], contract: Contract, objective: Objective, days: DateRange
    ) -> None:
        """``predict``: raw features -> {name: output} of every model to score (dropout off)."""
        import tensorflow as tf

        self.objective = objective
        self.predict = tf.function(predict, reduce_retracing=True)
        self._metrics: dict[str, Any] = {}  # one metrics object per model, reset before each scoring
        self.chunks = [
            ({k: tf.constant(v) for k, v in arrow_to_inputs(b, contract).items()}, labels(b, contract))
            for b in _rechunked(iter_record_batches(files, contract, days=days), VALIDATION_CHUNK_ROWS)
        ]
        if not self.chunks:
            raise ValueError(f"no validation rows in {days}: early stopping has nothing to score")

    def score(self, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each model's evaluation metrics (the objective's), with its current weights, on these rows;
        ``names``: only these (the members still training)."""
        metrics: dict[str, Any] = {}
        for x, y in self.chunks:
            for name, p in self.predict(x).items():
                if names is None or name in names:
                    if name not in metrics:
                        if name not in self._metrics:
                            self._metrics[name] = self.objective.eval_metrics()
                        metrics[name] = self._metrics[name]
                        metrics[name].reset()
                    metrics[name].update(y, p.numpy())
        return {name: m.result() for name, m in metrics.items()}


def _rechunked(batches: Iterator[Any], rows: int) -> list[Any]:
    """The record batches regrouped into batches of ``rows`` rows (the last one shorter): a part file's
    batches of a few hundred rows each cost a call and a metrics update per member every epoch."""
    import pyarrow as pa

    batches = list(batches)
    return pa.Table.from_batches(batches).combine_chunks().to_batches(max_chunksize=rows) if batches else []


def all_finite(variables: list[Any]) -> bool:
    import tensorflow as tf

    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables)


def _warm_start(phase: Phase, fit: MemberFit, warm: Any, iterator: Any) -> None:
    """The wide part alone first, so early stopping finds a converged linear model to build on."""
    t0 = time.perf_counter()
    import tensorflow as tf

    losses = warm(iterator, tf.constant(fit.warm_steps)).numpy()
    name = fit.member.name
    if not math.isfinite(losses[-1]) or not all_finite(fit.wide):
        raise FloatingPointError(f"{name}: the warm start of the wide part diverged: loss {losses[-1]}")
    log.info(
        "%s %s: warm start, the wide part alone for %d epochs: loss %.4f -> %.4f (%.1fs)",
        name, phase.name, fit.member.warm_start_epochs, float(losses[0]), float(losses[-1]), time.perf_counter() - t0,
    )  # fmt: skip


class Trainer:
    """Every member built and its steps traced once for the run; each phase restarts them from the initial
    state (weights, optimizers, early stopping), which a checkpoint taken right after the build holds."""

    def __init__(self, rt: Runtime) -> None:
        s = rt.spec
        self.rt = rt
        self.host = build_preprocessing(s.contract, s.stats) if rt.host_preprocessing else None
        self.build = build_members(rt, s.model.members, self.host)
        self.step, self.warm = step_functions(rt, self.build)
        _ = self.build.checkpoint.save_counter  # created now, so that the initial state holds every variable
        self.initial = self.build.checkpoint.write(str(rt.write_dir("initial", "ckpt")))
        self.fresh = True  # the variables hold the initial state

    def run(self, phase: Phase) -> PhaseOutcome:
        """Train (or resume) every member for ``phase``: at most its ``max_epochs`` each."""
        import tensorflow as tf

        rt, s, build = self.rt, self.rt.spec, self.build
        rows = count_rows(rt.files, s.contract, phase.days) if phase.days else int(s.stats["rows"])
        if rows == 0:
            raise ValueError(f"no training rows in {phase.days} of {s.train_uri}")
        steps = max(1, rows // rt.global_batch)
        if not self.fresh:
            build.checkpoint.read(self.initial).assert_existing_objects_matched()
        self.fresh = False
        build.set_steps(s.epochs, steps)
        real_dir, write_dir = rt.checkpoint_dir / phase.name, rt.write_dir(phase.name)
        manager = tf.train.CheckpointManager(build.checkpoint, str(write_dir), max_to_keep=2)
        latest = tf.train.latest_checkpoint(str(real_dir))
        if latest:
            build.checkpoint.restore(latest).assert_existing_objects_matched()
            log.info("%s: resumed from %s at epoch %d", phase.name, latest, int(build.epoch.numpy()))
        iterator = iter(self._dataset(phase))
        start_epoch = int(build.epoch.numpy())
        if start_epoch == 0:  # a resumed attempt restores weights that were warm-started
            for name, warm_step in self.warm.items():
                _warm_start(phase, build.fits[name], warm_step, iterator)
        validation = None
        if phase.validation:
            validation = ValidationRows(build.predict, rt.files, s.contract, s.objective, phase.validation)
        history = _epochs(rt, phase, build, self.step, iterator, steps, manager, validation)
        outcomes = {
            name: MemberOutcome(
                epochs=_member_epochs(rt, phase, fit, int(build.epoch.numpy())),
                best_epoch=int(fit.best_epoch.numpy()), best_score=float(fit.best_score.numpy()),
                weights=tf.train.latest_checkpoint(str(write_dir / name)) if not phase.validation else None,
            )
            for name, fit in build.fits.items()
        }  # fmt: skip
        return PhaseOutcome(rows=rows, steps_per_epoch=steps, resumed_from_epoch=start_epoch, members=outcomes,
                            history=history)  # fmt: skip

    def _dataset(self, phase: Phase) -> Any:
        import tensorflow as tf

        rt, s, host = self.rt, self.rt.spec, self.host

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            shard = rt.files[ctx.input_pipeline_id :: ctx.num_input_pipelines]
            per_replica = ctx.get_per_replica_batch_size(rt.global_batch)
            ds = make_dataset(shard, s.contract, per_replica, seed=s.seed + ctx.input_pipeline_id, repeat=True,
                              days=phase.days)  # fmt: skip
            return ds if host is None else ds.map(lambda x, y: (host(x), y), num_parallel_calls=tf.data.AUTOTUNE)

        return rt.strategy.distribute_datasets_from_function(dataset_fn)


def _member_epochs(rt: Runtime, phase: Phase, fit: MemberFit, epoch: int) -> int:
    """The epochs ``fit``'s member has trained after ``epoch`` epochs of the phase: all of them, up to its
    most, unless early stopping ended it ``patience`` epochs after its best."""
    last = min(epoch, phase.max_epochs[fit.member.name])
    best = int(fit.best_epoch.numpy())
    return min(last, best + rt.spec.patience) if phase.validation and best > 0 else last


def _trains(rt: Runtime, phase: Phase, fit: MemberFit, e: int) -> bool:
    """Whether ``fit``'s member trains epoch ``e + 1``: below its most epochs and, with validation, fewer than
    ``patience`` epochs after its best."""
    return _member_epochs(rt, phase, fit, e + 1) > e


def _epochs(
    rt: Runtime, phase: Phase, build: Build, step: Any, iterator: Any, steps: int, manager: Any,
    validation: ValidationRows | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The phase's remaining epochs: train, check, score, save, log; each member stops on its own."""
    import tensorflow as tf

    s, history = rt.spec, []
    writers = {
        name: tf.summary.create_file_writer(str(rt.checkpoint_dir / TENSORBOARD / name / phase.name))
        if rt.chief else tf.summary.create_noop_writer()
        for name in build.fits
    }  # fmt: skip
    stopped = {name: tf.train.CheckpointManager(tf.train.Checkpoint(model=fit.weights),
                                                str(rt.write_dir(phase.name, name)), max_to_keep=1)
               for name, fit in build.fits.items()}  # fmt: skip
    # A checkpoint costs about 0.1 s (three members' weights and optimizer slots), more than an epoch of a
    # 28-day window: save every epoch only when epochs are long, or when every worker must save together.
    every = 0.0 if isinstance(rt.strategy, tf.distribute.MultiWorkerMirroredStrategy) else s.checkpoint_seconds
    last_save = time.monotonic()
    for e in range(int(build.epoch.numpy()), max(phase.max_epochs.values())):
        active = [name for name, fit in build.fits.items() if _trains(rt, phase, fit, e)]
        if not active:
            break  # every member stopped (a resumed attempt finds it so from the restored state)
        t0 = time.perf_counter()
        for name in active:
            build.fits[name].metric.reset_state()
        losses = step(iterator, tf.constant(steps)).numpy().mean(axis=0)
        seconds = time.perf_counter() - t0
        loss_of = dict(zip(build.fits, (float(v) for v in losses), strict=True))
        # Before anything is saved: a retry must never resume from (or export) diverged weights.
        for name in active:
            if not math.isfinite(loss_of[name]) or not all_finite(build.fits[name].variables):
                raise FloatingPointError(
                    f"training diverged in epoch {e + 1} ({name} {phase.name}): loss {loss_of[name]}; nothing of "
                    f"this epoch was saved (lower the learning rate {s.learning_rate}?)"
                )
        scores = validation.score(active) if validation is not None else {}
        rows = [_epoch_row(rt, phase, build.fits[n], e, loss_of[n], seconds, steps, scores.get(n)) for n in active]
        build.epoch.assign(e + 1)
        for name in active:
            if not phase.validation and e + 1 == phase.max_epochs[name]:
                stopped[name].save(checkpoint_number=e + 1)  # the member's final weights
        ends = not any(_trains(rt, phase, fit, e + 1) for fit in build.fits.values())  # the phase's last epoch
        if ends or time.monotonic() - last_save >= every:
            manager.save(checkpoint_number=e + 1)
            last_save = time.monotonic()
        for row in rows:
            with writers[row["member"]].as_default(step=e + 1):
                for key, value in row.items():
                    if key not in ("member", "phase", "epoch"):
                        tf.summary.scalar(key, value)
            writers[row["member"]].flush()
            history.append(row)
            log.info(
                "%s %s epoch %d/%d loss=%.4f %s=%.4f%s %.1fs %.0f ex/s",
                row["member"], phase.name, e + 1, phase.max_epochs[row["member"]], row["loss"], rt.metric_key,
                row[rt.metric_key], f" {rt.val_key}={row[rt.val_key]:.4f}" if rt.val_key in row else "", seconds,
                row["examples_per_second"],
            )  # fmt: skip
        if rt.on_epoch is not None:
            rt.on_epoch(rows)
    return history


def _epoch_row(
    rt: Runtime, phase: Phase, fit: MemberFit, e: int, loss: float, seconds: float, steps: int,
    scores: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """One member's epoch as history records it; with validation scores, its early-stopping state moves."""
    s = rt.spec
    row: dict[str, Any] = {
        "member": fit.member.name, "phase": phase.name, "epoch": e + 1, "loss": loss,
        rt.metric_key: float(fit.metric.result()),
        "learning_rate": float(fit.schedule(fit.optimizer.iterations)), "seconds": round(seconds, 2),
        "examples_per_second": round(steps * rt.global_batch / seconds, 1),
    }  # fmt: skip
    if scores is not None:
        row[rt.val_key] = float(scores[s.objective.headline])
        if int(fit.best_epoch.numpy()) == 0 or rt.better(row[rt.val_key], float(fit.best_score.numpy())):
            fit.best_score.assign(row[rt.val_key])
            fit.best_epoch.assign(e + 1)
    return row
