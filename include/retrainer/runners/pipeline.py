"""The pipeline: the stages in order, as one function. ``retrainer run`` is this runner; the DAG
wires the same stage functions as separate Airflow tasks, handing each the previous one's result."""

from __future__ import annotations

from retrainer.core.config import RunConfig
from retrainer.core.results import PipelineResult


def run_pipeline(cfg: RunConfig) -> PipelineResult:
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.export import export_model
    from retrainer.stages.features import build_features
    from retrainer.stages.register import register_model
    from retrainer.stages.train import train_model
    from retrainer.stages.validate import validate_features

    gate = check_raw_days(cfg)  # a missing landed day is named before Spark starts
    features = build_features(gate, cfg)
    validated = validate_features(features, cfg)
    training = train_model(validated, cfg)
    evaluation = evaluate_models(validated, training, cfg)
    exported = export_model(validated, training, cfg)
    registration = register_model(validated, training, evaluation, exported, cfg)
    return PipelineResult(gate, features, validated, training, evaluation, exported, registration)
