"""Stage 5, export: the trained model -> a SavedModel whose signature takes the raw features.

Exported into a staging folder, reloaded in a fresh Python process, and its predictions on 100
evaluation rows compared with the in-memory model's; only a SavedModel that passes replaces the
run's ``saved_model`` folder.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from retrainer import atomic
from retrainer.config import RunConfig
from retrainer.fingerprint import parquet_parts
from retrainer.layout import RunLayout
from retrainer.training.data import arrow_to_inputs
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)
SAMPLE_ROWS = 100
TOLERANCE = 1e-5


class ExportMismatch(RuntimeError):
    """The reloaded SavedModel does not predict what the trained model predicts."""


def export_model(features: dict[str, Any], training: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retrainer.training.loop import load_trained_model

    workload = get_workload(cfg.workload)
    contract = workload.contract
    layout = RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date)
    model = load_trained_model(training, contract)

    first = pq.ParquetFile(parquet_parts(features["eval_uri"])[0])
    sample = pa.Table.from_batches([next(first.iter_batches(batch_size=SAMPLE_ROWS))])
    expected = model(arrow_to_inputs(sample, contract), training=False).numpy().reshape(-1)

    with atomic.staged_dir(layout.saved_model) as staging:
        export_dir = staging / "model"
        model.export(str(export_dir), verbose=False)
        sample_path = staging / "verification_sample.parquet"
        pq.write_table(sample.select([c.name for c in contract.features]), sample_path)
        served = np.asarray(_predict_in_fresh_process(export_dir, sample_path))
        diff = float(np.max(np.abs(served - expected))) if len(expected) else 0.0
        if served.shape != expected.shape or diff > TOLERANCE:
            raise ExportMismatch(
                f"SavedModel reloaded in a fresh process disagrees with the trained model on {len(expected)} "
                f"evaluation rows: max |diff| = {diff:.3g} > {TOLERANCE}"
            )
    saved_model_uri = str(layout.saved_model / "model")
    result = {
        "saved_model_uri": saved_model_uri,
        "verified_rows": len(expected),
        "max_abs_diff": diff,
        "serving_inputs": contract.serving_dtypes(),
    }
    atomic.write_json(layout.export_meta, result)
    log.info("exported %s; fresh-process check on %d rows: max |diff| %.2g", saved_model_uri, len(expected), diff)
    return result


def _predict_in_fresh_process(model_dir: Path, sample: Path) -> list[float]:
    proc = subprocess.run(
        [sys.executable, "-m", "retrainer.serving.verify", "--model", str(model_dir), "--sample", str(sample)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise ExportMismatch(f"SavedModel failed to load or predict in a fresh process:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["predictions"]
