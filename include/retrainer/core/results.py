"""What each stage returns: small frozen records of paths and facts, never data.

Each serialises to a JSON-compatible dict (what a task pushes to XCom and what the run folder keeps)
and loads back from one. Stages are wired by these types: ``train_model`` takes a
:class:`ValidationResult`, so unvalidated features cannot reach it. Where a result lives on disk is
the layout's business (:class:`retrainer.core.layout.RunLayout`), not the stage's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from retrainer.core.feature_files import FeatureFiles

T = TypeVar("T", bound="StageResult")


class StaleResult(ValueError):
    """A stored result does not have the fields this version of retrainer expects."""


@dataclasses.dataclass(frozen=True)
class StageResult:
    STAGE: ClassVar[str] = ""  # the stage (and CLI command) that produces it

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [f.name for f in required if f.name not in data]
        if missing:
            raise StaleResult(
                f"{cls.__name__} lacks {missing}: written by another version of retrainer? rerun the {cls.STAGE} stage"
            )
        return cls(**{f.name: _typed(hints[f.name], data[f.name]) for f in fields if f.name in data})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date | Path):
        return str(value)
    return value


def _typed(hint: Any, value: Any) -> Any:
    """JSON value -> the field's declared type (nested results, optional, tuples, dates)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _typed(inner[0], value) if len(inner) == 1 else value
    if isinstance(hint, type) and issubclass(hint, StageResult):
        return value if isinstance(value, hint) else hint.from_dict(value)
    if hint is dt.date:
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
    if origin is tuple:
        return tuple(value)
    return value


@dataclasses.dataclass(frozen=True)
class RawGateResult(StageResult):
    """The raw gate passed for every landed day the run reads; what features may now read."""

    STAGE: ClassVar[str] = "check-raw"
    workload: str
    run_date: dt.date
    files: dict[str, str]  # "<source>/<date>" and "dims/<name>" -> sha256 of the landed file as it was checked
    scanned: list[str]  # "<source>/<date>" read by Spark this time (new or changed files)
    reused: int  # days whose record from an earlier check of the same file was reused
    quarantined: dict[str, int]  # "<source>/<date>" -> rows that did not parse, kept in a quarantine file
    report: GateReport


@dataclasses.dataclass(frozen=True)
class FeaturesResult(StageResult):
    """The feature sets as built, in a folder no training reads until validation promotes it."""

    STAGE: ClassVar[str] = "features"
    workload: str
    run_date: dt.date
    folder: str  # where they were built (the run's features.pending)
    train_range: tuple[str, str]
    eval_range: tuple[str, str]
    rows: dict[str, int]  # {"train": n, "eval": n}
    excluded_no_label: dict[str, int]
    train_fingerprint: str  # content hash of the training part files
    store_days_computed: list[str] = dataclasses.field(default_factory=list)  # feature-store days computed now
    store_days_reused: int = 0  # window days whose stored features were current
    # ISO day -> digest of the feature store's rows of that day that these features were built from:
    # validation checks those days (cached per digest) and refuses if the store has other rows now.
    store_digests: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class GateReport(StageResult):
    """What a gate found (the raw gate or validation); written whether it passed or not (the summary shows
    failures from it)."""

    STAGE: ClassVar[str] = "validate"
    success: bool
    failed: list[str]  # critical expectations that failed, one line each naming what and where
    evaluated: dict[str, int]  # expectations per suite
    results_uri: str
    data_docs_uri: str
    warnings: list[str] = dataclasses.field(default_factory=list)  # failed expectations of severity warning
    by_construction: int = 0  # of the evaluated expectations, those that hold by construction (reported apart)
    drift: dict[str, float] | None = None  # PSI per feature against the champion's training data
    drift_baseline: str = ""  # what drift was measured against, or why it was not
    days_checked: int = 0  # window days whose rows Great Expectations checked now (validation)
    days_reused: int = 0  # window days whose cached checks were current (validation)

    @property
    def could_fail(self) -> int:
        return sum(self.evaluated.values()) - self.by_construction


@dataclasses.dataclass(frozen=True)
class ValidationResult(StageResult):
    """Features that passed validation, at their final place. The only input training accepts."""

    STAGE: ClassVar[str] = "validate"
    features: FeaturesResult
    features_dir: str
    report: GateReport

    @property
    def files(self) -> FeatureFiles:
        return FeatureFiles(Path(self.features_dir))


# tf.distribute's class names as people call the strategies (TrainingResult keeps the class's own name)
STRATEGY_LABELS = {
    "_DefaultDistributionStrategy": "one device (no distribution strategy)",
    "OneDeviceStrategy": "one device",
    "MirroredStrategy": "MirroredStrategy",
    "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
    "TPUStrategy": "TPUStrategy",
    "TPUStrategyV2": "TPUStrategy",
}


EPOCHS_STREAMED_TAG = "retrainer.epochs_streamed"  # on the MLflow run: the chief streamed every epoch's curves


def epoch_curves(row: dict[str, Any]) -> dict[str, float]:
    """One training-history row (a member's epoch) as MLflow metric keys and values: ``<member>_train_loss``,
    ``<member>_train_<metric>``, ``<member>_val_<metric>`` (step: the epoch). The one naming of the curves, for
    the chief's stream during training and for ``register``'s batch when nothing was streamed."""
    prefix = f"{row['member']}_" if "member" in row else ""
    curve = {"train_loss": row["loss"], **{k: v for k, v in row.items() if k.startswith(("train_", "val_"))}}
    return {f"{prefix}{k}": float(v) for k, v in curve.items()}


@dataclasses.dataclass(frozen=True)
class TrainingResult(StageResult):
    STAGE: ClassVar[str] = "train"
    run_key: str  # fingerprint of training data, tables, model-defining params and contract
    checkpoint_dir: str
    checkpoint: str | None
    hyperparameters: dict[str, Any]
    strategy: str
    replicas: int
    launcher: str
    num_workers: int
    global_batch_size: int
    steps_per_epoch: int
    resumed_from_epoch: int
    train_metric: str  # name of the per-epoch training metric in ``history``
    history: list[dict[str, float]]  # this attempt's epochs (a resumed attempt starts after the restored one)
    fit_rows: int = 0  # rows the weights were fitted on (the training split minus the validation days)
    fit_range: tuple[str, str] | None = None
    validation_range: tuple[str, str] | None = None  # early stopping's held-out days, or None
    epochs_trained: int = 0  # in total, over every attempt
    best_epoch: int = 0  # the most epochs a member's final fit ran (each member's: ``member_epochs``)
    member_epochs: dict[str, int] = dataclasses.field(default_factory=dict)  # each member's final epoch count
    best_validation: dict[str, float] = dataclasses.field(default_factory=dict)
    tensorboard_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class EvaluationResult(StageResult):
    STAGE: ClassVar[str] = "evaluate"
    headline: str  # the workload's gate metric
    higher_is_better: bool
    new: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    gain: float | None  # headline improvement over the champion, positive = better
    min_gain: float
    promote: bool
    reason: str
    eval_range: tuple[str, str]
    champion_run_date: dt.date | None = None  # the run date of the champion it was compared with
    # scikit-learn reference models on the same rows: {name: metrics}; they never gate promotion
    baselines: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    run_key: str = ""  # the training run whose model was scored: register refuses any other run's evaluation
    # the days the gate compared on when narrower than eval_range (days the champion trained on left out),
    # and the new model's metrics on them (``new`` is always the whole evaluation range's)
    compared_range: tuple[str, str] | None = None
    new_compared: dict[str, float] | None = None
    # the headline overall and per workload slice with 95 % bootstrap intervals, on the compared rows, and
    # what the slice gate made of each (retrainer.evaluation.slices.sliced); {} for a run without them
    slices: dict[str, Any] = dataclasses.field(default_factory=dict)
    held_by_slices: list[str] = dataclasses.field(default_factory=list)  # one line per slice that held the run
    plots: list[str] = dataclasses.field(default_factory=list)  # the PNG files in the run's plots/ folder


@dataclasses.dataclass(frozen=True)
class ExportResult(StageResult):
    STAGE: ClassVar[str] = "export"
    saved_model_uri: str
    verified_rows: int
    max_abs_diff: float
    serving_inputs: dict[str, str]
    run_key: str = ""  # the training run whose model was exported
    saved_model_digest: str = ""  # of every file of the SavedModel: register uploads only these bytes
    saved_model_bytes: int = 0  # on disk, every file
    # p50/p99 milliseconds per call by batch size ("1", "256"), measured in the fresh process that loaded it
    latency_ms: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    # the TF Lite conversion, checked against the SavedModel on the same rows: its file (None when not kept), size,
    # largest difference, and why there is none (conversion failed, predictions differ, turned off)
    tflite_uri: str | None = None
    tflite_bytes: int = 0
    tflite_max_abs_diff: float | None = None
    tflite_note: str = ""


@dataclasses.dataclass(frozen=True)
class ApprovalResult(StageResult):
    """A person's answer to "promote this run's model?" (the DAG's approval task, Airflow's human-in-the-loop)."""

    STAGE: ClassVar[str] = "approve"
    chosen: list[str]  # the options chosen: ["Approve"] or ["Reject"]
    by: str = ""  # who answered (the Airflow user)
    at: str = ""  # when (ISO 8601)

    @property
    def approved(self) -> bool:
        return self.chosen == ["Approve"]

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> ApprovalResult:
        """From the approval task's return value (the HITL payload: chosen_options, responded_by_user, ...)."""
        who = answer.get("responded_by_user") or {}
        name = (who.get("name") or who.get("id") or "") if isinstance(who, dict) else str(who)
        return cls(chosen=list(answer.get("chosen_options") or []), by=name, at=str(answer.get("responded_at") or ""))


@dataclasses.dataclass(frozen=True)
class RegistrationResult(StageResult):
    STAGE: ClassVar[str] = "register"
    registered_model: str
    version: str
    reused_existing_version: bool
    mlflow_run_id: str
    promoted: bool
    decision: str
    aliases: dict[str, str]
    tracking_uri: str
    champion_before: str | None = None  # the champion this run found under the promotion lock

    @property
    def champion_changed(self) -> bool:
        """This run moved ``champion`` (promoted is also true when the version already was champion)."""
        return self.promoted and self.champion_before != self.version


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """Every stage's result of one local run (``retrainer run``)."""

    raw_gate: RawGateResult
    features: FeaturesResult
    validation: ValidationResult
    training: TrainingResult
    evaluation: EvaluationResult
    export: ExportResult
    registration: RegistrationResult
