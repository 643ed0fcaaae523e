"""Stage 5, export: the trained model -> a SavedModel whose signature takes the raw features.

Exported into a staging folder, reloaded in a fresh Python process, and its predictions on 100
evaluation rows compared with the in-memory model's; the same process then times the serving signature
at batch 1 and 256 (p50, p99), and the SavedModel's size and those p99s are held to the deployment's serving
budgets. Only a SavedModel that passes both replaces the run's ``saved_model`` folder: one too slow or too
large fails the task (``ServingBudgetExceeded``), and the champion, which only ``register`` moves, stays.
The fresh process is started first, so its TensorFlow import overlaps loading and exporting the model here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.fingerprint import parquet_parts, tree_digest
from retrainer.core.layout import ExportFiles
from retrainer.core.results import ExportResult, TrainingResult, ValidationResult
from retrainer.serving.saved_model import write_saved_model
from retrainer.stages import costed
from retrainer.training.dataset import arrow_to_inputs
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)
SAMPLE_ROWS = 100
# float32 end to end: absolute for probabilities, relative for outputs in larger units (minutes, ...)
ATOL, RTOL = 1e-5, 1e-5


LATENCY_BATCHES = (1, 256)  # rows per call: one request, and a batch as a batch-scoring client sends
LATENCY_REPEATS = 100  # timed calls per batch size


class ExportMismatch(RuntimeError):
    """The reloaded SavedModel does not predict what the trained model predicts."""


class ServingBudgetExceeded(RuntimeError):
    """The SavedModel serves correctly but is slower or larger than the deployment's serving budgets allow."""


def serving_budgets() -> dict[str, float]:
    """{what: limit} of the deployment (0: not checked): ``p99_ms@1``, ``p99_ms@256``, ``size_mib``."""
    from retrainer.core.deployment import deployment

    d = deployment()
    return {"p99_ms@1": d.serving_p99_ms_batch1, "p99_ms@256": d.serving_p99_ms_batch256,
            "size_mib": d.saved_model_max_mb}  # fmt: skip


def over_budget(size_bytes: int, latency_ms: dict[str, dict[str, float]], budgets: dict[str, float]) -> list[str]:
    """One line per budget the SavedModel exceeds, with the measurement, the limit and the setting to change."""
    settings = {"p99_ms@1": "RETRAINER_SERVING_P99_MS_BATCH1", "p99_ms@256": "RETRAINER_SERVING_P99_MS_BATCH256",
                "size_mib": "RETRAINER_SAVED_MODEL_MAX_MB"}  # fmt: skip
    measured = {"size_mib": size_bytes / 2**20}
    measured |= {f"p99_ms@{batch}": t["p99"] for batch, t in latency_ms.items()}
    return [
        f"{what} {measured[what]:.2f} > {limit:g} ({settings[what]})"
        for what, limit in budgets.items()
        if limit > 0 and what in measured and measured[what] > limit
    ]


@costed("export")
def export_model(validated: ValidationResult, training: TrainingResult, run: RunContext | RunConfig) -> ExportResult:
    from retrainer.training.loop import load_trained_model

    run = RunContext.of(run)
    workload = run.workload
    layout = run.layout
    with _FreshProcess() as checker:  # importing TensorFlow while this process loads and exports the model
        model = load_trained_model(validated, training, workload)
        result = _export_and_check(model, validated, run, checker)
    result = dataclasses.replace(
        result, run_key=training.run_key, saved_model_digest=tree_digest(result.saved_model_uri)
    )
    layout.save(result)
    log.info("exported %s (%.1f MiB); fresh-process check on %d rows: max |diff| %.2g; latency ms %s",
             result.saved_model_uri, result.saved_model_bytes / 2**20, result.verified_rows, result.max_abs_diff,
             result.latency_ms)  # fmt: skip
    return result


def _export_and_check(model: Any, validated: ValidationResult, run: RunContext, checker: _FreshProcess) -> ExportResult:
    """Export into a staging folder; it replaces the run's SavedModel only if the fresh process agrees."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    contract, layout = run.workload.contract, run.layout

    first = pq.ParquetFile(parquet_parts(validated.files.eval)[0])
    sample = pa.Table.from_batches([next(first.iter_batches(batch_size=SAMPLE_ROWS))])
    expected = model(arrow_to_inputs(sample, contract), training=False).numpy().reshape(-1)

    with atomic.staged_dir(layout.saved_model) as staging:
        staged = ExportFiles(staging)
        export_dir, sample_path = staged.model, staged.verification_sample
        write_saved_model(model, export_dir)
        pq.write_table(sample.select([c.name for c in contract.features]), sample_path)
        reply = checker.predict(export_dir, sample_path)
        served = np.asarray(reply["predictions"])
        if served.shape != expected.shape:
            raise ExportMismatch(f"SavedModel served {served.shape} predictions for {expected.shape} rows")
        diff = float(np.max(np.abs(served - expected))) if len(expected) else 0.0
        if not np.allclose(served, expected, rtol=RTOL, atol=ATOL):
            raise ExportMismatch(
                f"SavedModel reloaded in a fresh process disagrees with the trained model on {len(expected)} "
                f"evaluation rows: max |diff| = {diff:.3g} (atol {ATOL}, rtol {RTOL})"
            )
        size = sum(f.stat().st_size for f in Path(export_dir).rglob("*") if f.is_file())
        latency = reply.get("latency_ms", {})
        exceeded = over_budget(size, latency, serving_budgets())
        if exceeded:
            raise ServingBudgetExceeded(
                f"the SavedModel serves correctly but breaks the serving budget: {'; '.join(exceeded)}; measured "
                f"in a fresh process over {LATENCY_REPEATS} calls per batch size: {latency}; not kept"
            )
    return ExportResult(
        saved_model_uri=str(ExportFiles(layout.saved_model).model),
        verified_rows=len(expected),
        max_abs_diff=diff,
        serving_inputs=contract.serving_dtypes(),
        saved_model_bytes=size,
        latency_ms=latency,
    )


class _FreshProcess:
    """A new Python (``retrainer.serving.verify --wait``) started before the model exists: it imports
    TensorFlow, then waits for the SavedModel's path on stdin. It never sees this process's objects. It is
    stopped if the export fails before asking it, and it exits when this process dies (its stdin closes).
    No ``preexec_fn``: that forces a plain fork, whose at-fork handlers (gRPC's, when the same process
    holds a Spark Connect session, as under ``retrainer run``) break the child."""

    def __enter__(self) -> _FreshProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "retrainer.serving.verify", "--wait"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        return self

    def predict(self, model_dir: Path, sample: Path) -> dict[str, Any]:
        """The fresh process's reply: ``predictions`` on the sample, and ``latency_ms`` by batch size."""
        request = {"model": str(model_dir), "sample": str(sample),
                   "latency": {"batches": list(LATENCY_BATCHES), "repeats": LATENCY_REPEATS}}  # fmt: skip
        out, err = self.proc.communicate(json.dumps(request) + "\n", timeout=600)
        if self.proc.returncode != 0:
            raise ExportMismatch(f"SavedModel failed to load or predict in a fresh process:\n{err[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
