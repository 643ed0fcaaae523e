"""The pipeline: the stages in order, as one function. ``retrainer run`` is this runner; the DAG
wires the same stage functions as separate Airflow tasks, handing each the previous one's result."""

from __future__ import annotations

from retrainer.core.config import RunConfig
from retrainer.core.results import PipelineResult
from retrainer.workloads import RunContext


def run_pipeline(cfg: RunConfig | RunContext) -> PipelineResult:
    """Every stage in order in this process, over one :class:`RunContext`."""
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.export import export_model
    from retrainer.stages.features import build_features
    from retrainer.stages.register import register_model
    from retrainer.stages.train import train_model
    from retrainer.stages.validate import validate_features

    run = RunContext.of(cfg)
    gate = check_raw_days(run)  # a missing landed day is named before Spark starts
    features = build_features(gate, run)
    validated = validate_features(features, run)
    training = train_model(validated, run)
    evaluation = evaluate_models(validated, training, run)
    exported = export_model(validated, training, run)
    registration = register_model(validated, training, evaluation, exported, run)
    if registration.champion_changed:  # no Asset here: the summary that follows is the announcement
        from retrainer.registry.promotion import mark_published

        mark_published(run.layout.promotion_intent, registration.version)
    return PipelineResult(gate, features, validated, training, evaluation, exported, registration)
