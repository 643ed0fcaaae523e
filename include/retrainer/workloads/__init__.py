"""Workloads: everything specific to one prediction problem lives in one module here.

A workload module defines ``WORKLOAD``, a :class:`Workload`: its data contract, its objective, the
raw sources it reads and a Spark function that turns raw partitions into the feature table. A second
workload is a new module in this package (found by its name); the stages do not change. Modules whose
name starts with ``_`` hold code shared by several workloads and are not workloads themselves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from retrainer.core.config import RunConfig
from retrainer.core.layout import RunLayout
from retrainer.spec.contract import Contract
from retrainer.spec.model_spec import WIDE_AND_DEEP_ENSEMBLE, ModelSpec
from retrainer.spec.objectives import Objective
from retrainer.spec.raw_contract import RawContract
from retrainer.spec.slices import SliceSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from retrainer.spark.raw_reader import RawReader

# build(reader, start, end, raw_days) -> feature rows for days in [start, end), columns as in the
# contract; raw_days are the landed days it may read (the window plus history_days before it).
FeatureBuilder = Callable[["RawReader", dt.date, dt.date, Sequence[dt.date]], "DataFrame"]


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    registered_model: str  # the MLflow registered model its versions and aliases live under
    contract: Contract
    objective: Objective
    raw: RawContract  # the daily sources (raw/<source>/date=D/<source>.csv) and what each landed day must satisfy
    dimensions: tuple[str, ...]  # raw/dims/<name>.csv
    history_days: int  # raw days before the training window that the features need (lagged rates)
    build_features: FeatureBuilder
    # The network it trains: the members of the ensemble and how each is fitted.
    model: ModelSpec = WIDE_AND_DEEP_ENSEMBLE
    # Bump when build_features changes what it computes: the feature store keys stored days by it.
    feature_version: str = "1"
    # How evaluation cuts its rows to compare the new model with the champion part by part (the slice gate).
    slices: tuple[SliceSpec, ...] = ()

    @property
    def daily_sources(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.raw.sources)


def workload_names() -> list[str]:
    import retrainer.workloads as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def get_workload(name: str) -> Workload:
    known = workload_names()
    if name not in known:
        raise ValueError(f"unknown workload {name!r}; known: {known}")
    workload = importlib.import_module(f"retrainer.workloads.{name}").WORKLOAD
    if workload.name != name:
        raise ValueError(f"module retrainer.workloads.{name} defines workload {workload.name!r}")
    return workload


# A run's context: its config with the workload and the run folder resolved once. Every runner (the CLI,
# the local pipeline, an Airflow task, a training worker) builds one and hands it to the stages, which read
# ``run.workload`` and ``run.layout`` instead of looking them up again from names, so the lookups cannot
# disagree within a run. Stages also accept a plain RunConfig (tests, notebooks) and build it themselves.
@dataclasses.dataclass(frozen=True)
class RunContext:
    config: RunConfig
    workload: Workload
    layout: RunLayout

    @classmethod
    def of(cls, run: RunConfig | RunContext) -> RunContext:
        """The context of a config (looked up now), or the context itself."""
        if isinstance(run, RunContext):
            return run
        return cls(run, get_workload(run.run.workload), RunLayout.of(run))

    def replace(self, **values: object) -> RunContext:
        """The same run with some parameters changed (the workload and folder follow the config)."""
        return RunContext.of(self.config.replace(**values))
