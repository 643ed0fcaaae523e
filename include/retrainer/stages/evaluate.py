"""Stage 4, evaluate: the new model and the current champion on the same evaluation rows.

Both are scored batch by batch from the Parquet files (bounded memory). The gate, like TFX's
Evaluator blessing: promote when there is no champion, or when the new model's AUC beats the
champion's by at least ``min_auc_gain``. The decision records which champion version it beat so
registration can refuse a promotion if the champion moved in between.
"""

from __future__ import annotations

import logging
from typing import Any

from retrainer import atomic, registry
from retrainer.config import RunConfig
from retrainer.fingerprint import parquet_parts
from retrainer.layout import RunLayout
from retrainer.metrics import BinaryMetrics
from retrainer.training.data import arrow_to_inputs, iter_record_batches, labels
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)


def evaluate_models(features: dict[str, Any], training: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    from retrainer.training.loop import load_trained_model

    workload = get_workload(cfg.workload)
    contract = workload.contract
    layout = RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date)
    model = load_trained_model(training, contract)

    champion_version = registry.alias_version(cfg.tracking_uri, workload.registered_model, registry.CHAMPION)
    champion = None
    if champion_version is not None:
        champion = registry.load_version(cfg.tracking_uri, workload.registered_model, champion_version)

    new_metrics, champ_metrics = BinaryMetrics(), BinaryMetrics()
    for batch in iter_record_batches(parquet_parts(features["eval_uri"]), contract):
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
        raise ValueError(f"evaluation set {features['eval_uri']} is empty")
    if champ is None:
        promote, reason = True, "no champion yet"
    else:
        # Histogram AUCs of one model differ in the 7th digit between runs: compare at 1e-6.
        gain = round(new["auc"] - champ["auc"], 6)
        promote = gain >= cfg.min_auc_gain
        reason = (
            f"AUC {new['auc']:.4f} vs champion v{champion_version} {champ['auc']:.4f}: gain {gain:+.4f} "
            f"{'>=' if promote else '<'} min_auc_gain {cfg.min_auc_gain}"
        )
    result = {
        "new": new,
        "champion": champ,
        "champion_version": champion_version,
        "min_auc_gain": cfg.min_auc_gain,
        "promote": promote,
        "reason": reason,
        "eval_range": features["eval_range"],
        "evaluation_uri": str(layout.evaluation),
    }
    atomic.write_json(layout.evaluation, result)
    log.info("evaluation: promote=%s (%s)", promote, reason)
    return result
