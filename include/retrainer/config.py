"""Run configuration: one frozen object built from flags, Airflow params and environment.

Defaults are the embedded single-machine engines (Spark ``local[*]``, MLflow on SQLite, all under
the project folder); the standard environment variables point the same code at real engines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any

ENV_HOME = "RETRAINER_HOME"
ENV_DATA_ROOT = "RETRAINER_DATA_ROOT"
ENV_SPARK_MASTER = "RETRAINER_SPARK_MASTER"
ENV_STRATEGY = "RETRAINER_STRATEGY"
ENV_LOCAL_WORKERS = "RETRAINER_LOCAL_WORKERS"
ENV_MLFLOW = "MLFLOW_TRACKING_URI"

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def project_home() -> Path:
    """The folder that holds the embedded stores; the current directory unless RETRAINER_HOME says."""
    return Path(os.environ.get(ENV_HOME) or os.getcwd()).resolve()


def default_data_root() -> str:
    return os.environ.get(ENV_DATA_ROOT) or str(project_home() / "data")


def default_tracking_uri() -> str:
    return os.environ.get(ENV_MLFLOW) or f"sqlite:///{project_home() / 'mlflow' / 'mlflow.db'}"


def default_spark_master() -> str:
    return os.environ.get(ENV_SPARK_MASTER) or "local[*]"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a stage needs besides its input URIs. Immutable so every stage sees the same run."""

    run_date: dt.date
    workload: str = "flight_delay"
    window_days: int = 28
    eval_days: int = 7
    epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 0.003
    hidden_units: int = 64
    min_auc_gain: float = 0.0
    strategy: str = dataclasses.field(default_factory=lambda: os.environ.get(ENV_STRATEGY, "auto"))
    # >1: train with MultiWorkerMirroredStrategy on this many local processes (see training/launcher.py)
    local_workers: int = dataclasses.field(default_factory=lambda: int(os.environ.get(ENV_LOCAL_WORKERS) or 0))
    seed: int = 42
    part_files: int = 4
    data_root: str = dataclasses.field(default_factory=default_data_root)
    tracking_uri: str = dataclasses.field(default_factory=default_tracking_uri)
    spark_master: str = dataclasses.field(default_factory=default_spark_master)
    # Lineage recorded on the MLflow run; filled by the runner (Airflow or CLI).
    dag_id: str = "cli"
    run_id: str = "manual"

    def __post_init__(self) -> None:
        if isinstance(self.run_date, str):
            object.__setattr__(self, "run_date", dt.date.fromisoformat(self.run_date))
        problems = []
        if self.eval_days < 1:
            problems.append(f"eval_days must be >= 1, got {self.eval_days}")
        if self.window_days <= self.eval_days:
            problems.append(
                f"window_days ({self.window_days}) must be larger than eval_days ({self.eval_days}) "
                "so that some days are left for training"
            )
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.local_workers < 0:
            problems.append(f"local_workers must be >= 0, got {self.local_workers}")
        if self.part_files < 1:
            problems.append(f"part_files must be >= 1, got {self.part_files}")
        if problems:
            raise ValueError("invalid run configuration: " + "; ".join(problems))

    # --- the run's calendar: a run dated D trains on [D-W, D-E) and evaluates on [D-E, D) ---
    @property
    def train_start(self) -> dt.date:
        return self.run_date - dt.timedelta(days=self.window_days)

    @property
    def eval_start(self) -> dt.date:
        return self.run_date - dt.timedelta(days=self.eval_days)

    @property
    def end(self) -> dt.date:
        """Exclusive end of the evaluation window: the run's own date."""
        return self.run_date

    def hyperparameters(self) -> dict[str, Any]:
        """What changes the trained model; part of the checkpoint key and logged to MLflow."""
        return {
            "window_days": self.window_days,
            "eval_days": self.eval_days,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "hidden_units": self.hidden_units,
            "seed": self.seed,
        }

    def with_overrides(self, **overrides: Any) -> RunConfig:
        known = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if k in known and v is not None})
