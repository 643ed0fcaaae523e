"""The ensemble's members built together under the run's strategy, and their training step.

The members share no weight, so one traced step computes every member's loss on the same batch and
applies each member's own optimizer(s) to its own gradients: what training them one after the other did
(same initial weights, same shuffled stream of batches, each member's own updates), for one build and one
trace per run instead of one per member and phase. (The warm start draws its batches from the same stream
first, so the other members start further along it than they did alone.) Everything that creates
variables runs under ``strategy.scope()``; optimizers are built before the first step (else
MirroredStrategy fails on a placeholder). Each loss is averaged over the global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrainer.spec.model_spec import Member
from retrainer.training.model import WIDE_LOGIT, build_network
from retrainer.training.train_spec import TrainSpec


@dataclasses.dataclass
class Runtime:
    """What every member and phase of one training run share: the strategy and where things go."""

    spec: TrainSpec
    strategy: Any
    policy: str
    host_preprocessing: bool
    files: list[str]
    checkpoint_dir: Path
    scratch: Path | None  # a worker's own checkpoint folder; None on the chief
    chief: bool
    # the chief hands each finished epoch's rows (one per member still training) here: the MLflow stream
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def global_batch(self) -> int:
        return self.spec.batch_size * self.replicas

    @property
    def metric_key(self) -> str:
        return f"train_{self.spec.objective.train_metric_name}"

    @property
    def val_key(self) -> str:
        return f"val_{self.spec.objective.headline}"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.spec.objective.higher_is_better else a < b

    def network(self) -> Any:
        """A fresh network (every member's weights, encoded features in); call it under the strategy."""
        s = self.spec
        return build_network(s.contract, s.objective, s.stats, s.hidden_units, s.seed, s.dropout, s.model)

    def write_dir(self, *parts: str) -> Path:
        return (self.checkpoint_dir if self.scratch is None else self.scratch).joinpath(*parts)


@dataclasses.dataclass
class MemberFit:
    """One member: its model, variables, optimizers and checkpointed state."""

    member: Member
    net: Any  # encoded features -> this member's output (shares the member's weights with the network)
    weights: Any  # the member's layer: what its checkpoints hold
    variables: list[Any]
    wide: list[Any]
    adam_variables: list[Any]
    optimizer: Any
    wide_optimizer: Any | None
    warm_optimizer: Any | None
    warm_cosine_steps: Any | None  # the warm start's cosine length in steps (a variable: set per phase)
    schedule: Any
    metric: Any
    best_score: Any
    best_epoch: Any
    checkpoint: Any  # weights, optimizers and early-stopping state: one child of the phase's checkpoint
    warm_steps: int = 0  # the warm start's steps in the current phase

    def set_steps(self, steps: int) -> None:
        """A phase of ``steps`` steps an epoch begins: the warm start's length follows."""
        self.warm_steps = self.member.warm_start_epochs * steps
        if self.warm_cosine_steps is not None:
            self.warm_cosine_steps.assign(float(self.warm_steps))


@dataclasses.dataclass
class Build:
    """Every member built once for the run (both phases restart it from its initial state, so one trace of
    the training step serves both): the members' fits and how raw features reach them."""

    fits: dict[str, MemberFit]
    network: Any  # encoded features -> the ensemble's output: every member's weights
    preprocessing: Any  # raw -> encoded features
    in_step: bool  # whether the training step encodes (else the input pipeline does: host preprocessing)
    epoch: Any  # the phase's epochs done (all members advance together)
    cosine_steps: Any  # the learning rate's cosine length in steps (a variable: the phases' epochs differ)
    checkpoint: Any  # the phase's checkpoint: the epoch and each member's own

    def predict(self, x: dict[str, Any]) -> dict[str, Any]:
        """Each member's output on a batch of raw features (for scoring; dropout off)."""
        encoded = self.preprocessing(x)
        return {name: fit.net(encoded, training=False) for name, fit in self.fits.items()}

    def set_steps(self, epochs: int, steps: int) -> None:
        """A phase of ``steps`` steps an epoch begins. The cosine spans the configured ``epochs`` in both
        phases: the final fit follows the selection fit's learning rates up to the chosen epoch, so "the
        best epoch count" means the same in both."""
        self.cosine_steps.assign(float(epochs * steps))
        for fit in self.fits.values():
            fit.set_steps(steps)


def build_members(rt: Runtime, members: tuple[Member, ...], host: Any | None) -> Build:
    """One network holding every member (the same initial weights a member built alone gets), each member's
    optimizers built before the first step, under ``strategy.scope()``. ``host``: the input pipeline's
    preprocessing, when it runs there (then the members take encoded features; the scorer chains it)."""
    import tensorflow as tf

    from retrainer.training.model import build_preprocessing

    s = rt.spec
    with rt.strategy.scope():
        network = rt.network()
        preprocessing = host if host is not None else build_preprocessing(s.contract, s.stats)
        cosine_steps = tf.Variable(1.0, trainable=False, name="cosine_steps")
        fits = {m.name: _member_fit(rt, m, network, cosine_steps) for m in members}
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(epoch=epoch, **{name: fit.checkpoint for name, fit in fits.items()})
    return Build(fits, network, preprocessing, host is None, epoch, cosine_steps, checkpoint)


def _member_fit(rt: Runtime, member: Member, network: Any, cosine_steps: Any) -> MemberFit:
    import keras
    import tensorflow as tf

    s = rt.spec
    weights = network.get_layer(member.name)
    variables = weights.trainable_variables
    wide = [v for v in variables if v.path.startswith(f"{WIDE_LOGIT}/")]
    schedule = keras.optimizers.schedules.CosineDecay(s.learning_rate, cosine_steps, alpha=0.05)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    if rt.policy == "mixed_float16":  # float16 gradients underflow without a dynamic loss scale
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    wide_optimizer = None
    if member.wide_optimizer == "adagrad":
        adam_variables = [v for v in variables if all(v is not w for w in wide)]
        wide_optimizer = keras.optimizers.Adagrad(learning_rate=s.model.adagrad_learning_rate)
        wide_optimizer.build(wide)
    elif member.wide_optimizer == "adam":
        adam_variables = variables
    else:
        raise ValueError(f"member {member.name}: unknown wide optimizer {member.wide_optimizer!r}")
    optimizer.build(adam_variables)
    optimizers = {"optimizer": optimizer} | ({"wide_optimizer": wide_optimizer} if wide_optimizer else {})
    warm_optimizer = warm_cosine_steps = None
    if member.warm_start_epochs:
        warm_cosine_steps = tf.Variable(1.0, trainable=False, name=f"{member.name}_warm_cosine_steps")
        rate = s.model.warm_start_learning_rate
        warm_optimizer = keras.optimizers.Adam(
            learning_rate=keras.optimizers.schedules.CosineDecay(rate, warm_cosine_steps, alpha=0.05)
        )
        warm_optimizer.build(wide)
        optimizers["warm_optimizer"] = warm_optimizer
    best_score = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name=f"{member.name}_best_score")
    best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{member.name}_best_epoch")
    checkpoint = tf.train.Checkpoint(model=weights, best_score=best_score, best_epoch=best_epoch, **optimizers)
    return MemberFit(
        member=member, net=network.members[member.name], weights=weights, variables=variables, wide=wide,
        adam_variables=adam_variables, optimizer=optimizer, wide_optimizer=wide_optimizer,
        warm_optimizer=warm_optimizer, warm_cosine_steps=warm_cosine_steps, schedule=schedule,
        metric=s.objective.train_metric(), best_score=best_score, best_epoch=best_epoch, checkpoint=checkpoint,
    )  # fmt: skip


def step_functions(rt: Runtime, build: Build) -> tuple[Any, dict[str, Any]]:
    """The distributed training step of every member and each warm-starting member's warm-start step (wide
    part only), as ``tf.function``s of ``(iterator, steps)`` that run ``steps`` steps and return the loss of
    each (for the training step, each member's loss in ``build.fits``' order: shape ``[steps, members]``)."""
    import tensorflow as tf

    objective, global_batch = rt.spec.objective, rt.global_batch

    def encoded(x: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return build.preprocessing(x) if build.in_step else x

    def member_loss(net: Any, x: dict[str, tf.Tensor], y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        p = tf.cast(net(x, training=True), tf.float32)
        return p, tf.nn.compute_average_loss(objective.per_example_loss(y, p), global_batch_size=global_batch)

    def train_member(fit: MemberFit, x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape(persistent=fit.wide_optimizer is not None) as tape:
            p, loss = member_loss(fit.net, x, y)
            scaled = fit.optimizer.scale_loss(loss)  # the loss itself unless a LossScaleOptimizer
        grads = tape.gradient(scaled, fit.adam_variables)
        fit.optimizer.apply_gradients(zip(grads, fit.adam_variables, strict=True))
        if fit.wide_optimizer is not None:  # float32 layers: the unscaled loss's gradients
            fit.wide_optimizer.apply_gradients(zip(tape.gradient(loss, fit.wide), fit.wide, strict=True))
        fit.metric.update_state(y, p)
        return loss

    def step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        features = encoded(x)  # once for every member
        return tf.stack([train_member(fit, features, y) for fit in build.fits.values()])

    def warm_step(fit: MemberFit) -> Any:
        def run(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                _, loss = member_loss(fit.net, encoded(x), y)
            fit.warm_optimizer.apply_gradients(zip(tape.gradient(loss, fit.wide), fit.wide, strict=True))
            return loss

        return run

    def distributed(fn: Any) -> Any:
        # ``steps`` steps per call, in one traced loop (Keras' steps_per_execution): a call per step cost
        # about 3 ms of Python and dispatch, more than the step itself on a 28-day window's batches.
        @tf.function
        def run(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
            losses = tf.TensorArray(tf.float32, size=steps)
            for i in tf.range(steps):
                x, y = next(iterator)
                per_replica = rt.strategy.run(fn, args=(x, y))
                losses = losses.write(i, rt.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
            return losses.stack()

        return run

    warm = {name: distributed(warm_step(fit)) for name, fit in build.fits.items() if fit.warm_optimizer}
    return distributed(step), warm
