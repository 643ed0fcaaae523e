"""One member of the ensemble built for one phase under the run's strategy, and its training steps.

Everything that creates variables runs under ``strategy.scope()``; optimizers are built before the
first step (else MirroredStrategy fails on a placeholder). The loss is averaged over the global batch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from retrainer.spec.model_spec import Member
from retrainer.training.model import WIDE_LOGIT, build_model, build_network, chain
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

    def network(self, host: bool) -> Any:
        """A fresh network (every member's weights) under the strategy; ``host``: without preprocessing."""
        s = self.spec
        args = (s.contract, s.objective, s.stats, s.hidden_units, s.seed, s.dropout, s.model)
        return build_network(*args) if host else build_model(*args).network

    def write_dir(self, *parts: str) -> Path:
        return (self.checkpoint_dir if self.scratch is None else self.scratch).joinpath(*parts)


@dataclasses.dataclass
class MemberFit:
    """One member built for one phase: its model, variables, optimizers and checkpointed state."""

    model: Any  # raw (or, with host preprocessing, encoded) features -> this member's output
    scorer: Any  # raw features -> this member's output
    weights: Any  # the member's layer: what checkpoints hold
    variables: list[Any]
    wide: list[Any]
    adam_variables: list[Any]
    optimizer: Any
    wide_optimizer: Any | None
    warm_optimizer: Any | None
    warm_steps: int
    schedule: Any
    metric: Any
    epoch: Any
    best_score: Any
    best_epoch: Any
    checkpoint: Any


def build_member(rt: Runtime, member: Member, steps: int, host: Any | None) -> MemberFit:
    """The member under ``strategy.scope()``, with the optimizers built before the first step (else
    MirroredStrategy fails on a placeholder)."""
    import keras
    import tensorflow as tf

    s = rt.spec
    with rt.strategy.scope():
        if host is None:
            full = build_model(s.contract, s.objective, s.stats, s.hidden_units, s.seed, s.dropout, s.model)
            model, weights = full.members[member.name], full.network.get_layer(member.name)
        else:
            network = rt.network(host=True)
            model, weights = network.members[member.name], network.get_layer(member.name)
        variables = weights.trainable_variables
        wide = [v for v in variables if v.path.startswith(f"{WIDE_LOGIT}/")]
        # The cosine spans the configured epochs in both phases: the final fit follows the selection fit's
        # learning rates up to the chosen epoch, so "the best epoch count" means the same in both.
        schedule = keras.optimizers.schedules.CosineDecay(s.learning_rate, s.epochs * steps, alpha=0.05)
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
        warm_steps, warm_optimizer = member.warm_start_epochs * steps, None
        if warm_steps:
            rate = s.model.warm_start_learning_rate
            warm_optimizer = keras.optimizers.Adam(
                learning_rate=keras.optimizers.schedules.CosineDecay(rate, warm_steps, alpha=0.05)
            )
            warm_optimizer.build(wide)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_score = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="best_score")
        best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
        optimizers = {"optimizer": optimizer} | ({"wide_optimizer": wide_optimizer} if wide_optimizer else {})
        checkpoint = tf.train.Checkpoint(
            model=weights, epoch=epoch, best_score=best_score, best_epoch=best_epoch, **optimizers
        )
        metric = s.objective.train_metric()
    scorer = model if host is None else chain(s.contract, host, model)
    return MemberFit(
        model=model, scorer=scorer, weights=weights, variables=variables, wide=wide, adam_variables=adam_variables,
        optimizer=optimizer, wide_optimizer=wide_optimizer, warm_optimizer=warm_optimizer, warm_steps=warm_steps,
        schedule=schedule, metric=metric, epoch=epoch, best_score=best_score, best_epoch=best_epoch,
        checkpoint=checkpoint,
    )  # fmt: skip


def step_functions(rt: Runtime, fit: MemberFit) -> tuple[Any, Any]:
    """The distributed training step and the warm start's step (wide part only), as ``tf.function``s."""
    import tensorflow as tf

    objective, global_batch = rt.spec.objective, rt.global_batch

    def member_loss(x: dict[str, tf.Tensor], y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        p = tf.cast(fit.model(x, training=True), tf.float32)
        return p, tf.nn.compute_average_loss(objective.per_example_loss(y, p), global_batch_size=global_batch)

    def step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape(persistent=fit.wide_optimizer is not None) as tape:
            p, loss = member_loss(x, y)
            scaled = fit.optimizer.scale_loss(loss)  # the loss itself unless a LossScaleOptimizer
        grads = tape.gradient(scaled, fit.adam_variables)
        fit.optimizer.apply_gradients(zip(grads, fit.adam_variables, strict=True))
        if fit.wide_optimizer is not None:  # float32 layers: the unscaled loss's gradients
            fit.wide_optimizer.apply_gradients(zip(tape.gradient(loss, fit.wide), fit.wide, strict=True))
        fit.metric.update_state(y, p)
        return loss

    def warm_step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            _, loss = member_loss(x, y)
        fit.warm_optimizer.apply_gradients(zip(tape.gradient(loss, fit.wide), fit.wide, strict=True))
        return loss

    def distributed(fn: Any) -> Any:
        @tf.function
        def run(iterator: Any) -> tf.Tensor:
            x, y = next(iterator)
            return rt.strategy.reduce(tf.distribute.ReduceOp.SUM, rt.strategy.run(fn, args=(x, y)), axis=None)

        return run

    return distributed(step), (distributed(warm_step) if fit.warm_steps else None)
