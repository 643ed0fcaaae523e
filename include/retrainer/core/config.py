"""Run configuration, in three groups: what identifies a run, what tunes it, and where the engines are.

Every field declared with :func:`retrainer.core.params.param` is a run parameter: the DAG's form, the CLI
flags, validation and a worker's argv are all generated from these declarations (``params.py``).
Engine defaults are the embedded single-machine ones (Spark ``local[*]``, MLflow on SQLite, all
under the project folder); the environment variables named here point the same code at real engines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrainer.core import params
from retrainer.core.params import param
from retrainer.core.run_window import RunWindow

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
LAUNCHERS = ("in_process", "local_processes", "kubernetes")
ACCELERATORS = ("cpu", "gpu", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def project_home() -> Path:
    """The folder that holds the embedded stores; the current directory unless RETRAINER_HOME says."""
    return Path(os.environ.get("RETRAINER_HOME") or os.getcwd()).resolve()


def data_root_from_env() -> str | None:
    """RETRAINER_DATA_ROOT if set: the one place it is read (the engines group's default uses it too)."""
    return os.environ.get("RETRAINER_DATA_ROOT") or None


def default_data_root() -> str:
    return data_root_from_env() or str(project_home() / "data")


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_home() / '.mlflow' / 'mlflow.db'}"


class ConfigError(ValueError):
    """A parameter is missing, of the wrong type or out of bounds; the message names each one."""


def _check(group: Any, cross_field: Callable[[], list[str]] | None = None) -> None:
    """Convert and bound-check each parameter, then (only if those pass) the rules between fields."""
    problems = params.validate_group(group)
    if not problems and cross_field is not None:
        problems = cross_field()
    if problems:
        raise ConfigError("invalid run configuration: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """Which run this is. Set by the runner (Airflow's logical date and run id, or the CLI)."""

    date: dt.date = param(help="the run's date D: trains on days before D", flag="--date")
    workload: str = param("flight_delay", help="which workload (module under retrainer.workloads)")
    dag_id: str = param("cli", help="lineage recorded on the MLflow run: the DAG (or runner) id")
    run_id: str = param("manual", help="lineage recorded on the MLflow run: the DAG run id")

    def __post_init__(self) -> None:
        if self.date is None:
            raise ConfigError("invalid run configuration: date is required")
        _check(self)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What a user tunes per run (the DAG's trigger form). ``changes_model`` params key the checkpoints."""

    window_days: int = param(
        28, minimum=3, maximum=365, changes_model=True, title="Window days",
        help="W: days before the run date used for training + evaluation",
    )  # fmt: skip
    eval_days: int = param(
        7, minimum=1, maximum=60, changes_model=True, title="Evaluation days",
        help="E: the last E days of the window, held out for evaluation",
    )  # fmt: skip
    validation_days: int = param(
        3, minimum=0, maximum=60, changes_model=True, title="Validation days",
        help="V: the last V training days, held out of the fit to pick the best epoch (0: no early stopping)",
    )  # fmt: skip
    epochs: int = param(
        30, minimum=1, maximum=200, changes_model=True, title="Epochs",
        help="at most this many passes over the data (early stopping usually ends sooner)",
    )  # fmt: skip
    patience: int = param(
        4, minimum=1, maximum=100, changes_model=True, title="Patience",
        help="stop after this many epochs without a better validation metric",
    )  # fmt: skip
    batch_size: int = param(
        1024, minimum=16, maximum=65536, changes_model=True, title="Batch size", help="rows per replica per step"
    )
    learning_rate: float = param(
        0.01, exclusive_minimum=0, maximum=1, changes_model=True, title="Learning rate",
        help="Adam's initial learning rate; it decays along a cosine to 5% over the epochs",
    )  # fmt: skip
    hidden_units: int = param(
        16, minimum=4, maximum=4096, changes_model=True, title="Hidden units",
        help="width of the deep part's first hidden layer",
    )  # fmt: skip
    dropout: float = param(
        0.5, minimum=0, maximum=0.9, changes_model=True, title="Dropout",
        help="dropout after each hidden layer of the deep part",
    )  # fmt: skip
    seed: int = param(42, minimum=0, maximum=2**31 - 1, changes_model=True, title="Seed", help="weights and shuffle")
    part_files: int = param(
        4, minimum=1, maximum=256, changes_model=True, title="Part files",
        help="Parquet files per split: the unit of sharding across input pipelines",
    )  # fmt: skip
    members: str = param(
        "all", changes_model=True, title="Ensemble members", pattern=r"all|[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*",
        help="which members of the workload's declared model to train, comma-separated (all: the whole ensemble)",
    )  # fmt: skip
    min_gain: float = param(
        0.0, minimum=-1000, maximum=1000, title="Minimum gain",
        help="promote only if the new model beats the champion's headline metric (the workload's: AUC, RMSE, ...) "
        "by at least this, in that metric's units and direction (never less than the deployment's floor, "
        "RETRAINER_MIN_GAIN_FLOOR)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        _check(self, self._cross_field)

    def _cross_field(self) -> list[str]:
        if self.window_days <= self.eval_days + self.validation_days:
            return [
                f"window_days ({self.window_days}) must be larger than eval_days ({self.eval_days}) + "
                f"validation_days ({self.validation_days}) so that some days are left for training"
            ]
        return []

    def data_defining(self) -> dict[str, Any]:
        """The parameters that shape the run's data (which days train, validate and evaluate; how the
        splits are written): with the run id, they key the run's folder (:class:`RunLayout`)."""
        return {name: getattr(self, name) for name in ("window_days", "eval_days", "validation_days", "part_files")}

    def model_defining(self) -> dict[str, Any]:
        """The parameters that change the trained model: part of the checkpoint key, logged to MLflow."""
        return {p.name: getattr(self, p.name) for p in params.parameters(Tuning) if p.spec.changes_model}


@dataclasses.dataclass(frozen=True)
class Engines:
    """Where the engines are and how training is placed. From the environment by default, never the UI."""

    data_root: str = param(
        help="landing zone and run outputs", env="RETRAINER_DATA_ROOT", default_factory=default_data_root
    )
    tracking_uri: str = param(
        help="MLflow tracking URI", env="MLFLOW_TRACKING_URI", default_factory=default_tracking_uri, secret=True
    )
    spark_master: str = param(
        "local[*]", env="RETRAINER_SPARK_MASTER", secret=True,
        help="a Spark Connect URL (sc://host:port; make sets the local server's) or a master URL for a driver in "
        "this process (local[*], spark://host:7077; under spark-submit the submitted one wins)",
    )  # fmt: skip
    strategy: str = param(
        "auto", choices=STRATEGIES, env="RETRAINER_STRATEGY",
        help="tf.distribute strategy; auto = multi-worker if TF_CONFIG names several tasks, mirrored with GPUs",
    )  # fmt: skip
    launcher: str = param(
        "in_process", choices=LAUNCHERS, env="RETRAINER_LAUNCHER",
        help="where training runs: in the task's process, num_workers local processes (MultiWorkerMirrored), "
        "or num_workers Kubernetes pods",
    )  # fmt: skip
    num_workers: int = param(
        1, minimum=1, maximum=64, env="RETRAINER_NUM_WORKERS", help="training processes the launcher starts"
    )
    accelerator: str = param(
        "cpu", choices=ACCELERATORS, env="RETRAINER_ACCELERATOR",
        help="what each worker trains on: GPUs go to the gpu pool and queue, pods get GPU or TPU resources",
    )  # fmt: skip
    gpus_per_worker: int = param(
        0, minimum=0, maximum=16, env="RETRAINER_GPUS_PER_WORKER", help="GPUs each worker (pod) asks for"
    )
    precision: str = param(
        "auto", choices=PRECISIONS, env="RETRAINER_PRECISION",
        help="Keras dtype policy; auto = mixed_float16 on GPUs, mixed_bfloat16 on TPUs, float32 on CPUs",
    )  # fmt: skip
    xla: str = param(
        "off", choices=("off", "on"), env="RETRAINER_XLA",
        help="XLA auto-clustering of the training step (for GPUs and TPUs; leave off on CPUs)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        _check(self, self._cross_field)

    def _cross_field(self) -> list[str]:
        out = []
        if self.launcher == "in_process" and self.num_workers != 1:
            out.append(f"launcher in_process runs one worker, got num_workers={self.num_workers}")
        several = self.launcher in ("local_processes", "kubernetes") and self.num_workers > 1
        if several and self.strategy not in ("auto", "multi_worker"):
            out.append(f"{self.num_workers} workers need strategy auto or multi_worker, got {self.strategy}")
        if self.accelerator == "gpu" and self.gpus_per_worker < 1:
            out.append("accelerator gpu needs gpus_per_worker >= 1")
        if self.accelerator != "gpu" and self.gpus_per_worker:
            out.append(f"gpus_per_worker={self.gpus_per_worker} needs accelerator gpu, got {self.accelerator}")
        if self.accelerator == "tpu" and self.strategy not in ("auto", "tpu"):
            out.append(f"accelerator tpu needs strategy auto or tpu, got {self.strategy}")
        if self.launcher == "local_processes" and self.accelerator != "cpu":
            out.append("local_processes share one machine's CPUs: use in_process (all local GPUs) or kubernetes")
        return out


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a stage needs besides its typed upstream results. Immutable: every stage sees one run."""

    run: RunIdentity
    tuning: Tuning = dataclasses.field(default_factory=Tuning)
    engines: Engines = dataclasses.field(default_factory=Engines)

    @classmethod
    def build(cls, date: dt.date | str, workload: str | None = None, **values: Any) -> RunConfig:
        """One flat set of parameter values (from flags, a form or a test) -> the three groups."""
        groups: dict[type, dict[str, Any]] = {RunIdentity: {"date": date}, Tuning: {}, Engines: {}}
        if workload is not None:
            groups[RunIdentity]["workload"] = workload
        owner = {p.name: g for g in groups for p in params.parameters(g)}
        unknown = sorted(set(values) - set(owner))
        if unknown:
            raise ConfigError(f"unknown run parameter(s) {unknown}; known: {sorted(owner)}")
        for name, value in values.items():
            if value is not None:
                groups[owner[name]][name] = value
        return cls(RunIdentity(**groups[RunIdentity]), Tuning(**groups[Tuning]), Engines(**groups[Engines]))

    def replace(self, **values: Any) -> RunConfig:
        """A copy with some parameters changed (any group)."""
        current = {p.name: getattr(g, p.name) for g in self.groups() for p in params.parameters(type(g))}
        return RunConfig.build(**(current | values))

    def groups(self) -> list[Any]:
        return [self.run, self.tuning, self.engines]

    def to_argv(self) -> list[str]:
        """The command line that rebuilds exactly this config in another process (see from_argv) whose
        environment holds :meth:`secret_env`: the secret parameters are never on a command line."""
        return params.to_argv(self.groups())

    def secret_env(self) -> dict[str, str]:
        """The parameters that may carry credentials (the tracking URI, the Spark URL), by their variables."""
        return params.secret_env(self.groups())

    @classmethod
    def from_argv(cls, argv: list[str]) -> RunConfig:
        import argparse

        parser = argparse.ArgumentParser(add_help=False)
        add_config_arguments(parser)
        namespace, rest = parser.parse_known_args(argv)
        if rest:
            raise ConfigError(f"unexpected arguments {rest}")
        return config_from_namespace(namespace)

    @property
    def window(self) -> RunWindow:
        return RunWindow(self.run.date, self.tuning.window_days, self.tuning.eval_days, self.tuning.validation_days)


def engine_setting(name: str) -> Any:
    """One engines parameter as the environment sets it (else its default), without the checks between
    fields: what an operator may read when a DAG file is parsed, before a run's other values are known."""
    field = next(f for f in dataclasses.fields(Engines) if f.name == name)
    spec = next(p for p in params.parameters(Engines) if p.name == name)
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return spec.convert(value)


ALL_GROUPS = (RunIdentity, Tuning, Engines)


def all_parameters() -> list[params.Parameter]:
    return [p for g in ALL_GROUPS for p in params.parameters(g)]


def add_config_arguments(parser: Any) -> None:
    params.add_arguments(parser, all_parameters(), required=("date",))


def config_from_namespace(namespace: Any) -> RunConfig:
    values = dict(params.given(namespace, all_parameters()))
    return RunConfig.build(**values)
