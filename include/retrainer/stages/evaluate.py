"""Stage 4, evaluate: the new model and the current champion on the same evaluation rows.

Both are scored batch by batch from the Parquet files (bounded memory), with the workload
objective's metrics. The gate, like TFX's Evaluator blessing: promote when there is no champion, or
when the new model beats the champion on the objective's headline metric by at
least ``min_gain`` in that metric's direction, and the run is not older than the champion
(:mod:`retrainer.registry.promotion`). scikit-learn baselines (:mod:`retrainer.training.baselines`) trained on the
whole training split are scored on the same rows and reported beside it; they never gate. The
decision records which champion version it was compared with, so registration can tell whether
the champion moved in between.
"""

from __future__ import annotations

import logging

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.fingerprint import parquet_parts
from retrainer.core.results import EvaluationResult, TrainingResult, ValidationResult
from retrainer.registry import promotion
from retrainer.stages import costed
from retrainer.training import baselines
from retrainer.training.dataset import arrow_to_inputs, iter_record_batches, labels
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)


@costed("evaluate")
def evaluate_models(
    validated: ValidationResult, training: TrainingResult, run: RunContext | RunConfig
) -> EvaluationResult:
    run = RunContext.of(run)
    cfg = run.config
    workload = run.workload
    contract, objective = workload.contract, workload.objective
    from retrainer.training.loop import load_trained_model

    model = load_trained_model(validated, training, workload)

    holder = promotion.holder(cfg.engines.tracking_uri, workload.registered_model, registry.CHAMPION)
    champion_version = holder.version if holder else None
    champion = None
    if holder is not None:
        champion = registry.load_version(cfg.engines.tracking_uri, workload.registered_model, holder.version)

    new_metrics, champ_metrics = objective.eval_metrics(), objective.eval_metrics()
    for batch in iter_record_batches(parquet_parts(validated.files.eval), contract):
        y = labels(batch, contract)
        new_metrics.update(y, model(arrow_to_inputs(batch, contract), training=False).numpy())
        if champion is not None:
            try:
                champ_metrics.update(y, champion.predict(batch.to_pandas()))
            except Exception as exc:
                raise RuntimeError(
                    f"champion {workload.registered_model} v{champion_version} cannot score this run's evaluation "
                    f"rows ({exc}); its input signature may predate the current contract"
                ) from exc

    new = new_metrics.result()
    champ = champ_metrics.result() if champion is not None else None
    if new["rows"] == 0:
        raise ValueError(f"evaluation set {validated.files.eval} is empty")
    references = baselines.fit_and_score(
        parquet_parts(validated.files.train),
        parquet_parts(validated.files.eval),
        contract,
        objective,
        atomic.read_json(validated.files.stats),
        seed=cfg.tuning.seed,
    )
    metric, gain = objective.headline, None
    min_gain, bar = promotion.bar(cfg.tuning.min_gain)
    too_old = promotion.forward_only(cfg.engines.tracking_uri, workload.registered_model, cfg.run.date, holder)
    held = too_old or promotion.too_few_eval_days(cfg.tuning.eval_days)
    if champ is None:
        promote, reason = held is None, "no champion yet" if held is None else f"held: {held}"
    else:
        gain = objective.gain(new, champ)
        better = gain >= min_gain
        reason = (
            f"{metric} {new[metric]:.4f} vs champion v{champion_version} {champ[metric]:.4f} "
            f"({'higher' if objective.higher_is_better else 'lower'} is better): gain {gain:+.4f} "
            f"{'>=' if better else '<'} {bar}"
        )
        promote = better and held is None
        if held is not None:
            reason = f"held: {held}; compared only: {reason}"
    result = EvaluationResult(
        headline=metric,
        higher_is_better=objective.higher_is_better,
        new=new,
        champion=champ,
        champion_version=champion_version,
        champion_run_date=holder.run_date if holder else None,
        gain=gain,
        min_gain=min_gain,
        promote=promote,
        reason=reason,
        eval_range=validated.features.eval_range,
        baselines=references,
        run_key=training.run_key,
    )
    run.layout.save(result)
    log.info("evaluation: promote=%s (%s)", promote, reason)
    return result
