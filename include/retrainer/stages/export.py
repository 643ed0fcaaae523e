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

import numpy as np

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.fingerprint import parquet_parts
from retrainer.core.layout import ExportFiles
from retrainer.core.results import ExportResult, TrainingResult, ValidationResult
from retrainer.training.dataset import arrow_to_inputs
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)
SAMPLE_ROWS = 100
# float32 end to end: absolute for probabilities, relative for outputs in larger units (minutes, ...)
ATOL, RTOL = 1e-5, 1e-5


class ExportMismatch(RuntimeError):
    """The reloaded SavedModel does not predict what the trained model predicts."""


def export_model(validated: ValidationResult, training: TrainingResult, run: RunContext | RunConfig) -> ExportResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retrainer.training.loop import load_trained_model

    run = RunContext.of(run)
    workload = run.workload
    contract = workload.contract
    layout = run.layout
    model = load_trained_model(validated, training, workload)

    first = pq.ParquetFile(parquet_parts(validated.files.eval)[0])
    sample = pa.Table.from_batches([next(first.iter_batches(batch_size=SAMPLE_ROWS))])
    expected = model(arrow_to_inputs(sample, contract), training=False).numpy().reshape(-1)

    with atomic.staged_dir(layout.saved_model) as staging:
        staged = ExportFiles(staging)
        export_dir, sample_path = staged.model, staged.verification_sample
        model.export(str(export_dir), verbose=False)
        pq.write_table(sample.select([c.name for c in contract.features]), sample_path)
        served = np.asarray(_predict_in_fresh_process(export_dir, sample_path))
        if served.shape != expected.shape:
            raise ExportMismatch(f"SavedModel served {served.shape} predictions for {expected.shape} rows")
        diff = float(np.max(np.abs(served - expected))) if len(expected) else 0.0
        if not np.allclose(served, expected, rtol=RTOL, atol=ATOL):
            raise ExportMismatch(
                f"SavedModel reloaded in a fresh process disagrees with the trained model on {len(expected)} "
                f"evaluation rows: max |diff| = {diff:.3g} (atol {ATOL}, rtol {RTOL})"
            )
    saved_model_uri = str(ExportFiles(layout.saved_model).model)
    result = ExportResult(
        saved_model_uri=saved_model_uri,
        verified_rows=len(expected),
        max_abs_diff=diff,
        serving_inputs=contract.serving_dtypes(),
    )
    layout.save(result)
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
