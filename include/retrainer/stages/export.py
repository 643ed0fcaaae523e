"""Stage 5, export: the trained model -> a SavedModel whose signature takes the raw features.

Exported into a staging folder, reloaded in a fresh Python process, and its predictions on 100
evaluation rows compared with the in-memory model's; the same process then times the serving signature
at batch 1 and 256 (p50, p99), and the SavedModel's size and those p99s are held to the deployment's serving
budgets. Only a SavedModel that passes both replaces the run's ``saved_model`` folder: one too slow or too
large fails the task (``ServingBudgetExceeded``), and the champion, which only ``register`` moves, stays.
The fresh process is started first, so its TensorFlow import overlaps loading and exporting the model here.
It also converts the network to TF Lite (``RETRAINER_TFLITE=check``, the default; the string lookups stay out:
TF Lite's built-in ops have none) and predicts the sample, encoded by the model's own preprocessing, with TF Lite's
interpreter; ``model.tflite`` (and ``model.tflite.inputs.json``, how to encode a request) is kept beside the
SavedModel only if those predictions match the SavedModel's on the raw rows; a conversion that fails or
disagrees is reported in the result (``tflite_note``), never a failed export.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
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
    return {what: float(getattr(d, field)) for what, field in BUDGET_SETTINGS.items()}


BUDGET_SETTINGS = {"p99_ms@1": "serving_p99_ms_batch1", "p99_ms@256": "serving_p99_ms_batch256",
                   "size_mib": "saved_model_max_mb"}  # fmt: skip


def over_budget(size_bytes: int, latency_ms: dict[str, dict[str, float]], budgets: dict[str, float]) -> list[str]:
    """One line per budget the SavedModel exceeds, with the measurement, the limit and the setting to change."""
    from retrainer.core.deployment import setting_env

    settings = {what: setting_env(field) for what, field in BUDGET_SETTINGS.items()}
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

    from retrainer.core.deployment import deployment

    contract, layout = run.workload.contract, run.layout

    first = pq.ParquetFile(parquet_parts(validated.files.eval)[0])
    sample = pa.Table.from_batches([next(first.iter_batches(batch_size=SAMPLE_ROWS))])
    expected = model(arrow_to_inputs(sample, contract), training=False).numpy().reshape(-1)

    with atomic.staged_dir(layout.saved_model) as staging:
        staged = ExportFiles(staging)
        export_dir, sample_path = staged.model, staged.verification_sample
        lite, unconverted = None, "not converted (RETRAINER_TFLITE=off)"
        if deployment().tflite == "check":
            try:
                lite = _tflite_sources(model, sample, run, staging)
            except Exception as exc:  # noqa: BLE001 - an extra, never a failed export (tflite_verdict)
                unconverted = f"not converted: {type(exc).__name__}: {exc}"
            else:
                checker.convert(lite)  # the fresh process converts while this one writes the SavedModel
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
        tflite = tflite_verdict(reply.get("tflite"), served, staged.tflite if lite else None, unconverted)
        if lite:
            shutil.rmtree(lite["network"], ignore_errors=True)
            Path(lite["encoded"]).unlink(missing_ok=True)
            if tflite["kept"]:  # a plain write: the staging folder's replace below is the commit
                recipe = tflite_inputs(contract, atomic.read_json(validated.files.stats))
                staged.tflite_inputs.write_text(json.dumps(recipe, indent=2, sort_keys=True))
    final = ExportFiles(layout.saved_model)
    return ExportResult(
        saved_model_uri=str(ExportFiles(layout.saved_model).model),
        verified_rows=len(expected),
        max_abs_diff=diff,
        serving_inputs=contract.serving_dtypes(),
        saved_model_bytes=size,
        latency_ms=latency,
        tflite_uri=str(final.tflite) if tflite["kept"] else None,
        tflite_bytes=tflite["bytes"],
        tflite_max_abs_diff=tflite["max_abs_diff"],
        tflite_note=tflite["note"],
    )


def _tflite_sources(model: Any, sample: Any, run: RunContext, staging: Path) -> dict[str, str]:
    """What the fresh process converts and checks: the network alone as a SavedModel, the sample's features
    encoded by the model's own preprocessing layers (``.npz``), and where the ``.tflite`` file goes."""
    from retrainer.serving.saved_model import write_network_saved_model

    contract = run.workload.contract
    staged = ExportFiles(staging)
    network_dir, encoded_path = staging / "_tflite_network", staging / "_tflite_sample.npz"
    write_network_saved_model(model.network, network_dir)
    encoded = model.get_layer(f"{contract.name}_preprocessing")(arrow_to_inputs(sample, contract))
    np.savez(encoded_path, **{k: np.asarray(v) for k, v in encoded.items()})
    return {"network": str(network_dir), "encoded": str(encoded_path), "out": str(staged.tflite)}


def tflite_inputs(contract: Any, stats: dict[str, Any]) -> dict[str, Any]:
    """What a device computes from a raw request before it calls the ``.tflite`` network (the preprocessing the
    SavedModel holds and TF Lite's built-in ops cannot: string lookups): each numeric feature with a missing
    value replaced by ``mean``, then ``(x - mean) / sqrt(variance)``, as float32; each categorical feature as
    the 1-based position of its value in ``vocabulary``, 0 for a value not in it, as int64."""
    from retrainer.spec.contract import Role

    numeric = {c.name: {"mean": stats["numeric"][c.name]["mean"], "variance": stats["numeric"][c.name]["variance"]}
               for c in contract.by_role(Role.NUMERIC)}  # fmt: skip
    categorical = {c.name: {"vocabulary": list(stats["vocabulary"][c.name]), "unknown": 0}
                   for c in contract.by_role(Role.CATEGORICAL)}  # fmt: skip
    return {"numeric": numeric, "categorical": categorical}


def tflite_verdict(
    reply: dict[str, Any] | None, served: np.ndarray, path: Path | None, unconverted: str = ""
) -> dict[str, Any]:
    """Keep the TF Lite file only if it predicts what the SavedModel served on the same rows (within the same
    tolerance as the SavedModel against the trained model); otherwise remove it and say why. Never raises: the
    SavedModel is what serves, and it has passed."""
    out: dict[str, Any] = {"kept": False, "bytes": 0, "max_abs_diff": None, "note": ""}
    if path is None:  # not asked for, or the model could not be split (``unconverted`` says which)
        return out | {"note": unconverted or "not converted (RETRAINER_TFLITE=off)"}
    if not reply or "error" in reply:
        path.unlink(missing_ok=True)
        return out | {"note": f"conversion or inference failed: {(reply or {}).get('error', 'no reply')}"}
    lite = np.asarray(reply["predictions"])
    if lite.shape != served.shape:
        path.unlink(missing_ok=True)
        return out | {"note": f"TF Lite gave {lite.shape} predictions for {served.shape} rows; not kept"}
    diff = float(np.max(np.abs(lite - served))) if len(served) else 0.0
    if not np.allclose(lite, served, rtol=RTOL, atol=ATOL):
        path.unlink(missing_ok=True)
        return out | {"max_abs_diff": diff, "note": f"TF Lite disagrees with the SavedModel: max |diff| {diff:.3g}; "
                      "not kept"}  # fmt: skip
    return {"kept": True, "bytes": int(reply["bytes"]), "max_abs_diff": diff, "note": ""}


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

    def convert(self, tflite: dict[str, str]) -> None:
        """Hand the fresh process the TF Lite conversion (:func:`_tflite_sources`) before the SavedModel: it
        converts while this process writes the SavedModel, and its reply to :meth:`predict` carries the result.
        A child that already died is reported by :meth:`predict`."""
        if self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(json.dumps({"tflite": tflite}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def predict(self, model_dir: Path, sample: Path) -> dict[str, Any]:
        """The fresh process's reply: ``predictions`` on the sample, ``latency_ms`` by batch size, and the TF
        Lite conversion's predictions (``tflite``) when :meth:`convert` asked for it."""
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
