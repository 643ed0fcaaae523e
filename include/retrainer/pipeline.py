"""The pipeline: the stages in order, as one function. ``retrainer run`` is this runner; the DAG
wires the same stage functions as separate Airflow tasks."""

from __future__ import annotations

import logging
from typing import Any

from retrainer.config import RunConfig
from retrainer.landing import describe_missing, missing_partitions
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)


class MissingRawData(FileNotFoundError):
    """Raw partitions a run needs are not landed yet."""


def check_raw_inputs(cfg: RunConfig) -> list[str]:
    """The raw days a run reads; raises listing every missing partition."""
    days = get_workload(cfg.workload).raw_days(cfg.train_start, cfg.end)
    missing = missing_partitions(cfg.data_root, days)
    if missing:
        raise MissingRawData(
            f"run {cfg.run_date} is missing raw partitions under {cfg.data_root}/raw: {describe_missing(missing)}"
        )
    return [d.isoformat() for d in days]


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.export import export_model
    from retrainer.stages.features import build_features
    from retrainer.stages.register import register_model
    from retrainer.stages.train import train_model
    from retrainer.stages.validate import validate_features

    check_raw_inputs(cfg)
    features = build_features(cfg)
    validated = validate_features(features, cfg)
    training = train_model(validated, cfg)
    evaluation = evaluate_models(validated, training, cfg)
    exported = export_model(validated, training, cfg)
    registration = register_model(exported, evaluation, training, cfg)
    return {
        "features": features,
        "validate": validated,
        "train": training,
        "evaluate": evaluation,
        "export": exported,
        "register": registration,
    }
