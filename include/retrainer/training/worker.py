"""The training entry point: what every launcher starts, once per worker.

``python -m retrainer.training.worker <the run's argv>`` (see ``RunConfig.to_argv``) rebuilds the run's
config, reads the run's validated features from its folder, and trains (or resumes) under the
strategy TF_CONFIG and the config choose. Only the chief writes ``training.json``. The in-process
launcher calls :func:`run` directly; process launchers start :func:`main`.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

from retrainer.core import atomic
from retrainer.core.config import ConfigError, RunConfig
from retrainer.core.deployment import deployment
from retrainer.core.fingerprint import dict_fingerprint, file_digest
from retrainer.core.layout import RunLayout
from retrainer.core.results import TrainingResult, ValidationResult
from retrainer.spec.model_spec import ModelSpec
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)
# The code that decides what a checkpoint holds (the network, the objective's head, what the loop saves): its
# digest is part of the run key, so after an upgrade that changes any of it a retry starts over instead of
# restoring weights into a different graph. No version number to remember to bump.
# Named by module, not by path, so that a file moving inside the package is found where it now lives.
CHECKPOINT_CODE = (
    "retrainer.training.model",
    "retrainer.training.member",
    "retrainer.training.phase",
    "retrainer.training.loop",
    "retrainer.spec.objectives",
)


def checkpoint_code_files() -> dict[str, Path]:
    """Where each module of :data:`CHECKPOINT_CODE` is loaded from."""
    return {name: Path(str(importlib.util.find_spec(name).origin)) for name in CHECKPOINT_CODE}


def checkpoint_code_fingerprint() -> str:
    return dict_fingerprint({name: file_digest(path) for name, path in checkpoint_code_files().items()})


def run_key(validated: ValidationResult, stats: dict[str, Any], cfg: RunConfig) -> str:
    """What identifies a training run: a retry with the same key resumes, a different key starts over."""
    workload = get_workload(cfg.run.workload)
    return dict_fingerprint(
        {
            "train": validated.features.train_fingerprint,
            "stats": stats,
            "params": cfg.tuning.model_defining(),
            "contract": repr(workload.contract),
            "objective": repr(workload.objective),
            "checkpoint_code": checkpoint_code_fingerprint(),
        }
    )


def current_run_key(cfg: RunConfig) -> str:
    """The run key of this run's validated features and parameters, as the workers will compute it."""
    validated = RunLayout.of(cfg).load(ValidationResult)
    return run_key(validated, atomic.read_json(validated.files.stats), cfg)


def model_spec(cfg: RunConfig) -> ModelSpec:
    """The workload's declared model, narrowed to the run's ``members``; an unknown name is a config error."""
    try:
        return get_workload(cfg.run.workload).model.select(cfg.tuning.members)
    except ValueError as exc:
        raise ConfigError(f"invalid run configuration: {exc}") from None


def run(cfg: RunConfig, save: bool = True, layout: RunLayout | None = None) -> TrainingResult:
    """Train (or resume) this run's model; the chief saves the result as the run's ``training.json`` unless
    ``save`` is false (a measurement beside the run, such as ``bench/model_seeds.py``, which passes the
    measured run's ``layout``: another seed is another run's config, but the same run's features)."""
    from retrainer.training.epoch_stream import EpochStream
    from retrainer.training.loop import train
    from retrainer.training.strategy import is_chief_from_env
    from retrainer.training.train_spec import TrainSpec

    workload = get_workload(cfg.run.workload)
    layout = layout or RunLayout.of(cfg)
    validated = layout.load(ValidationResult)
    stats = atomic.read_json(validated.files.stats)
    key = run_key(validated, stats, cfg)
    t = cfg.tuning
    stream = EpochStream.for_run(layout.mlflow_run) if save and is_chief_from_env() else None
    outcome = train(
        TrainSpec(
            train_uri=str(validated.files.train),
            stats=stats,
            contract=workload.contract,
            objective=workload.objective,
            checkpoint_dir=str(layout.checkpoints_of(key)),
            run_key=key,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            hidden_units=t.hidden_units,
            dropout=t.dropout,
            seed=t.seed,
            strategy_name=cfg.engines.strategy,
            precision=cfg.engines.precision,
            xla=cfg.engines.xla,
            fit_days=cfg.window.fit_range,
            validation_days=cfg.window.validation_range,
            patience=t.patience,
            model=model_spec(cfg),
            checkpoint_seconds=deployment().checkpoint_seconds,
        ),
        on_epoch=stream,
    )
    if stream is not None:
        stream.close()
    result = TrainingResult(
        run_key=key,
        checkpoint_dir=str(layout.checkpoints_of(key)),
        checkpoint=outcome.checkpoint,
        hyperparameters=t.model_defining(),
        strategy=outcome.strategy,
        replicas=outcome.replicas,
        launcher=cfg.engines.launcher,
        num_workers=cfg.engines.num_workers,
        global_batch_size=outcome.global_batch_size,
        steps_per_epoch=outcome.steps_per_epoch,
        resumed_from_epoch=outcome.resumed_from_epoch,
        train_metric=f"train_{workload.objective.train_metric_name}",
        history=outcome.history,
        fit_rows=outcome.fit_rows,
        fit_range=cfg.window.fit_range,
        validation_range=cfg.window.validation_range,
        epochs_trained=outcome.epochs_trained,
        best_epoch=outcome.best_epoch,
        member_epochs=outcome.member_epochs,
        best_validation=outcome.best_validation,
        tensorboard_dir=outcome.tensorboard_dir,
    )
    if outcome.chief and save:
        layout.save(result)
    log.info("worker done (chief: %s): %s x%d", outcome.chief, result.strategy, result.replicas)
    return result


def main(argv: list[str] | None = None) -> int:
    import json
    import os

    from retrainer.training.strategy import tf_config_from_pod_env

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pod_config = tf_config_from_pod_env()
    if pod_config is not None and "TF_CONFIG" not in os.environ:  # a Kubernetes worker pod; before TF starts
        os.environ["TF_CONFIG"] = json.dumps(pod_config)
    for noisy in ("absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run(RunConfig.from_argv(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
