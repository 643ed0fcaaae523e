"""Stage 3, train: the run's training split -> checkpoints keyed by the run's date.

The checkpoint folder carries a run key (training-data fingerprint, statistics, hyperparameters):
a retry of the same run resumes, a rerun with different data or parameters starts over.
"""

from __future__ import annotations

import logging
from typing import Any

from retrainer import atomic
from retrainer.config import RunConfig
from retrainer.fingerprint import dict_fingerprint
from retrainer.layout import RunLayout
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)


def train_model(features: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """Train on ``features['train_uri']`` with the tables in ``features['stats_uri']``.

    With ``cfg.local_workers > 1`` (and no TF_CONFIG yet) this process becomes the launcher of a local
    MultiWorkerMirroredStrategy group whose workers each call this function again.
    """
    import os

    from retrainer.training.loop import train

    if not features.get("validated"):
        raise ValueError(
            f"refusing to train on features that did not pass validation: {features.get('features_uri')}; "
            "run the validate stage first"
        )
    if cfg.local_workers > 1 and not os.environ.get("TF_CONFIG"):
        from retrainer.training.launcher import train_on_local_workers

        return train_on_local_workers(features, cfg, cfg.local_workers)

    workload = get_workload(cfg.workload)
    layout = RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date)
    stats = atomic.read_json(features["stats_uri"])
    params = cfg.hyperparameters()
    run_key = dict_fingerprint(
        {"train": features["train_fingerprint"], "stats": stats, "params": params, "contract": repr(workload.contract)}
    )
    summary = train(
        train_uri=features["train_uri"],
        stats=stats,
        contract=workload.contract,
        checkpoint_dir=str(layout.checkpoints),
        run_key=run_key,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        hidden_units=cfg.hidden_units,
        seed=cfg.seed,
        strategy_name=cfg.strategy,
    )
    meta = {
        **summary,
        "run_key": run_key,
        "checkpoint_dir": str(layout.checkpoints),
        "stats_uri": features["stats_uri"],
        "hyperparameters": params,
        "train_fingerprint": features["train_fingerprint"],
    }
    if summary["chief"]:
        atomic.write_json(layout.training_meta, meta)
    return meta
