"""The raw-input rule: which landed files a run reads, and which of them are not there yet.

One rule for every runner: the Airflow sensor waits on it, the raw gate refuses to start without it,
and the features stage reads only files whose digest is still the one the gate checked. The days
come from the run calendar, the sources from the workload.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from retrainer.core.config import RunConfig
from retrainer.core.errors import BadData
from retrainer.core.fingerprint import file_digest
from retrainer.core.layout import raw_dim, raw_partition
from retrainer.core.results import RawGateResult
from retrainer.workloads import get_workload


class MissingRawData(FileNotFoundError):
    """Raw partitions a run needs are not landed yet."""


def raw_days(cfg: RunConfig) -> list[dt.date]:
    """Every raw day the run reads, its workload's history included."""
    return cfg.window.raw_days(get_workload(cfg.run.workload).history_days)


def missing_raw_inputs(cfg: RunConfig) -> dict[str, list[str]]:
    """{source: [dates or file names]} the run needs and cannot find; empty when complete."""
    workload = get_workload(cfg.run.workload)
    root = cfg.engines.data_root
    missing: dict[str, list[str]] = {}
    for day in raw_days(cfg):
        for source in workload.daily_sources:
            if not raw_partition(root, source, day).exists():
                missing.setdefault(source, []).append(day.isoformat())
    for name in workload.dimensions:
        if not raw_dim(root, name).exists():
            missing.setdefault("dims", []).append(f"{name}.csv")
    return missing


def describe_missing(missing: dict[str, list[str]]) -> str:
    return "; ".join(f"{source}: {', '.join(items)}" for source, items in sorted(missing.items()))


def check_raw_inputs(cfg: RunConfig) -> list[dt.date]:
    """The raw days a run reads; raises :class:`MissingRawData` listing every missing partition."""
    missing = missing_raw_inputs(cfg)
    if missing:
        raise MissingRawData(
            f"run {cfg.run.date} of {cfg.run.workload} is missing raw partitions under "
            f"{cfg.engines.data_root}/raw: {describe_missing(missing)}"
        )
    return raw_days(cfg)


class ChangedAfterGate(BadData):
    """A landed file changed between the raw gate and a stage that reads it."""


def landed_digests(data_root: str | Path, sources: Iterable[str], days: Iterable[dt.date]) -> dict[str, str]:
    """``"<source>/<day>"`` -> SHA-256 of each of those landed daily files that exists: the map the raw gate
    hands the feature store, for code that drives the store directly (its benchmark, its tests)."""
    days = list(days)
    return {
        f"{source}/{day.isoformat()}": file_digest(path)
        for source in sources
        for day in days
        if (path := raw_partition(data_root, source, day)).exists()
    }


def require_unchanged(gate: RawGateResult, cfg: RunConfig) -> None:
    """Raise if a landed file changed after the gate checked it: features must read what was checked."""
    changed = []
    for key, digest in gate.files.items():  # "<source>/<date>"
        source, day = key.split("/")
        if file_digest(raw_partition(cfg.engines.data_root, source, dt.date.fromisoformat(day))) != digest:
            changed.append(key)
    if changed:
        raise ChangedAfterGate(f"landed files changed after the raw gate checked them: {changed}; run check-raw again")
