"""Where every artefact lives: the one owner of file and folder names, and the one reader of results.

A run's folder is keyed by workload, run date, run id (Airflow's DAG run id; ``manual`` from the CLI) and
the parameters that shape its data (window, evaluation and validation days, part files):
``runs/<workload>/date=D/run=<run id>-<digest>``. A rerun of the same run (a retry, a cleared task)
replaces its outputs and never appends; two DAG runs of one date (scheduled, from the UI, a backfill)
never share a file, nor do two CLI runs with other windows. Runs of one folder that differ only in model
parameters keep their checkpoints apart (keyed by the training run key) and register refuses an
evaluation or SavedModel of another training run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from retrainer.core import atomic
from retrainer.core.results import (
    EvaluationResult,
    ExportResult,
    FeaturesResult,
    GateReport,
    RawGateResult,
    RegistrationResult,
    StageResult,
    TrainingResult,
    ValidationResult,
)

R = TypeVar("R", bound=StageResult)


class MissingStageResult(FileNotFoundError):
    """A stage's input was never produced for this run: the message names the stage to run first."""


def raw_partition(data_root: str | Path, source: str, day: dt.date) -> Path:
    return Path(data_root) / "raw" / source / f"date={day.isoformat()}" / f"{source}.csv"


def raw_dim(data_root: str | Path, name: str) -> Path:
    return Path(data_root) / "raw" / "dims" / f"{name}.csv"


def raw_gate_record(data_root: str | Path, source: str, day: dt.date, contract: str) -> Path:
    """The raw gate's record of one landed file, kept beside it (the file's digest says if it still applies)."""
    return raw_partition(data_root, source, day).parent / f"_gate.{contract}.json"


def quarantine_file(data_root: str | Path, source: str, day: dt.date) -> Path:
    """Rows of a landed day that did not parse, with the reason, for whoever fixes the feed."""
    return Path(data_root) / "quarantine" / source / f"date={day.isoformat()}" / f"{source}.rows.csv"


def landed_marker(data_root: str | Path) -> Path:
    return Path(data_root) / "raw" / "_LANDED.json"


@dataclasses.dataclass(frozen=True)
class ValidationFiles:
    """The files inside a validation folder (staged, then final)."""

    folder: Path

    REPORT = "summary.json"

    @property
    def report(self) -> Path:
        return self.folder / self.REPORT

    @property
    def results(self) -> Path:
        """Great Expectations' full results, per suite."""
        return self.folder / "results.json"

    @property
    def data_docs(self) -> Path:
        return self.folder / "data_docs"


@dataclasses.dataclass(frozen=True)
class ExportFiles:
    """The files inside an export folder (staged, then final)."""

    folder: Path

    @property
    def model(self) -> Path:
        """The SavedModel itself."""
        return self.folder / "model"

    @property
    def verification_sample(self) -> Path:
        """The evaluation rows the fresh-process check scored."""
        return self.folder / "verification_sample.parquet"

    @property
    def tflite(self) -> Path:
        """The network converted to TF Lite (encoded features in), kept only when, fed the model's own encoding of
        the verification sample, it predicts what the SavedModel predicts on the raw rows."""
        return self.folder / "model.tflite"

    @property
    def tflite_inputs(self) -> Path:
        """How a device encodes a raw request for ``model.tflite``: normalisation statistics and vocabularies."""
        return self.folder / "model.tflite.inputs.json"


VALIDATION_DIR = "validation"
RAW_GATE_DIR = "raw_gate"

# Each result type's file in the run folder.
RESULT_FILES: dict[type[StageResult], str] = {
    RawGateResult: "raw_gate.json",
    FeaturesResult: "features.json",
    GateReport: f"{VALIDATION_DIR}/{ValidationFiles.REPORT}",
    ValidationResult: "validation.json",
    TrainingResult: "training.json",
    EvaluationResult: "evaluation.json",
    ExportResult: "export.json",
    RegistrationResult: "registration.json",
}


RUN_PREFIX = "run="
DEFAULT_RUN_ID = "manual"


def run_folder_name(run_id: str, tuning: Mapping[str, Any]) -> str:
    """``run=<run id, made safe for a path>-<digest of run id and tuning>``: readable, and unique per run.

    The digest covers the exact run id (two ids that read alike once made safe still differ) and the
    data-defining parameters (two CLI runs of one date with other ``eval_days`` never share features).
    """
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", run_id).strip("-.")[:64] or "run"
    key = json.dumps({"run_id": run_id, "tuning": dict(tuning)}, sort_keys=True, default=str)
    return f"{RUN_PREFIX}{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def date_folder(data_root: str | Path, workload: str, run_date: dt.date) -> Path:
    """Every run of one workload and date, each in a ``run=...`` folder of its own."""
    return Path(data_root) / "runs" / workload / f"date={run_date.isoformat()}"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The folder of one run (workload, date, run id, data-defining parameters) and the names inside it."""

    root: Path

    @classmethod
    def for_run(
        cls,
        data_root: str | Path,
        workload: str,
        run_date: dt.date,
        run_id: str = DEFAULT_RUN_ID,
        tuning: Mapping[str, Any] | None = None,
    ) -> RunLayout:
        return cls(date_folder(data_root, workload, run_date) / run_folder_name(run_id, tuning or {}))

    @classmethod
    def of(cls, cfg: Any) -> RunLayout:
        """The layout of a :class:`retrainer.core.config.RunConfig`."""
        data = cfg.tuning.data_defining()
        return cls.for_run(cfg.engines.data_root, cfg.run.workload, cfg.run.date, cfg.run.run_id, data)

    @classmethod
    def runs_of(cls, data_root: str | Path, workload: str, run_date: dt.date) -> list[RunLayout]:
        """Every run folder of a date, least recently changed first (a folder's time moves when a stage adds
        or replaces a file in it): for an operator looking for a DAG run's outputs, and for tests."""
        folder = date_folder(data_root, workload, run_date)
        found = folder.glob(f"{RUN_PREFIX}*") if folder.is_dir() else []
        return [cls(p) for p in sorted((p for p in found if p.is_dir()), key=lambda p: (p.stat().st_mtime, p.name))]

    @classmethod
    def latest(cls, data_root: str | Path, workload: str, run_date: dt.date) -> RunLayout:
        """The newest run folder of a date; ``MissingStageResult`` if the date has none."""
        runs = cls.runs_of(data_root, workload, run_date)
        if not runs:
            where = date_folder(data_root, workload, run_date)
            raise MissingStageResult(f"no run of {workload} for {run_date} under {where}")
        return runs[-1]

    # --- folders ---------------------------------------------------------------------------------
    @property
    def costs(self) -> Path:
        """Each stage's wall and CPU seconds and peak memory (``retrainer.core.costs``), one file per stage."""
        return self.root / "cost"

    @property
    def features(self) -> Path:
        """Validated features: the only feature folder that training reads."""
        return self.root / "features"

    @property
    def features_pending(self) -> Path:
        """Features as built, before validation; promoted to ``features`` only if they pass."""
        return self.root / "features.pending"

    @property
    def features_rejected(self) -> Path:
        """The last features that failed validation, kept for inspection."""
        return self.root / "features.rejected"

    @property
    def validation(self) -> Path:
        """Great Expectations results and Data Docs."""
        return self.root / VALIDATION_DIR

    @property
    def raw_gate(self) -> Path:
        """The raw gate's Great Expectations results and Data Docs."""
        return self.root / RAW_GATE_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoints_of(self, run_key: str) -> Path:
        """One folder per training run (run key): a retry resumes in its own, a rerun of the date with other
        parameters or data trains beside it instead of wiping it."""
        return self.checkpoints / run_key[:16]

    @property
    def promotion_intent(self) -> Path:
        """Written by register just before it moves ``champion`` (version, the champion before, the decision);
        marked published by the task that announces it: a retry after a crash in between announces it."""
        return self.root / "promotion_intent.json"

    @property
    def mlflow_run(self) -> Path:
        """The MLflow run of this run's training (its id and tracking URI), opened by ``train`` before the workers
        start so that the chief streams each epoch's metrics into it; ``register`` logs the rest into the same
        run."""
        return self.root / "mlflow_run.json"

    @property
    def saved_model(self) -> Path:
        return self.root / "saved_model"

    @property
    def baselines(self) -> Path:
        """The scikit-learn baselines' metrics, keyed by what they were fitted and scored on: a retried or
        repeated evaluation of the run (register re-evaluates when the champion moved) reuses them."""
        return self.root / "baselines.json"

    @property
    def worker_logs(self) -> Path:
        return self.root / "worker_logs"

    @property
    def plots(self) -> Path:
        """Evaluation's PNG plots (ROC, precision-recall, calibration, the headline by slice), replaced as a whole."""
        return self.root / "plots"

    @property
    def report(self) -> Path:
        """The run's evidence report: one self-contained HTML page, written by register (it links the MLflow run)."""
        return self.root / "report.html"

    # --- results ---------------------------------------------------------------------------------
    def path_of(self, result_type: type[StageResult]) -> Path:
        return self.root / RESULT_FILES[result_type]

    def save(self, result: StageResult) -> Path:
        return atomic.write_json(self.path_of(type(result)), result.to_dict())

    def load(self, result_type: type[R]) -> R:
        path = self.path_of(result_type)
        if not path.exists():
            raise MissingStageResult(
                f"{path} not found: run the {result_type.STAGE} stage for this run first (same date, run id and window)"
            )
        return result_type.from_dict(atomic.read_json(path))

    def load_optional(self, result_type: type[R]) -> R | None:
        path = self.path_of(result_type)
        return result_type.from_dict(atomic.read_json(path)) if path.exists() else None

    def discard(self, *result_types: type[StageResult]) -> None:
        """Forget results a new attempt supersedes, so nothing reports a previous attempt as this one."""
        for t in result_types:
            self.path_of(t).unlink(missing_ok=True)
