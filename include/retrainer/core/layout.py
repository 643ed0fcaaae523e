"""Where every artefact lives: the one owner of file and folder names, and the one reader of results.

Runs are keyed by workload and run date, so a rerun replaces its outputs and never appends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import TypeVar

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


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The folder of one run (workload, date) and the fixed names inside it."""

    root: Path

    @classmethod
    def for_run(cls, data_root: str | Path, workload: str, run_date: dt.date) -> RunLayout:
        return cls(Path(data_root) / "runs" / workload / f"date={run_date.isoformat()}")

    @classmethod
    def of(cls, cfg: object) -> RunLayout:
        """The layout of a :class:`retrainer.core.config.RunConfig`."""
        return cls.for_run(cfg.engines.data_root, cfg.run.workload, cfg.run.date)  # type: ignore[attr-defined]

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
    def saved_model(self) -> Path:
        return self.root / "saved_model"

    @property
    def worker_logs(self) -> Path:
        return self.root / "worker_logs"

    # --- results ---------------------------------------------------------------------------------
    def path_of(self, result_type: type[StageResult]) -> Path:
        return self.root / RESULT_FILES[result_type]

    def save(self, result: StageResult) -> Path:
        return atomic.write_json(self.path_of(type(result)), result.to_dict())

    def load(self, result_type: type[R]) -> R:
        path = self.path_of(result_type)
        if not path.exists():
            raise MissingStageResult(f"{path} not found: run the {result_type.STAGE} stage for this date first")
        return result_type.from_dict(atomic.read_json(path))

    def load_optional(self, result_type: type[R]) -> R | None:
        path = self.path_of(result_type)
        return result_type.from_dict(atomic.read_json(path)) if path.exists() else None

    def discard(self, *result_types: type[StageResult]) -> None:
        """Forget results a new attempt supersedes, so nothing reports a previous attempt as this one."""
        for t in result_types:
            self.path_of(t).unlink(missing_ok=True)
