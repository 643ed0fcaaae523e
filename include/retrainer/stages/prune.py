"""Retention: what of a workload's data root may go, and removing it (``retrainer prune``, the housekeeping DAG).

Every run writes a folder of its own (features, checkpoints, SavedModel, reports), and nothing else ever
removes one: the data root grows by every run for ever. Kept, always: the folder of every version registered
in MLflow (its evidence: ``retrainer.run_folder`` on the version, the champion's among them), the newest
``keep_last`` run folders, and anything changed within ``min_age`` (a run in flight, a write in progress).
The rest may go: run folders that registered nothing (failed, or stopped before ``register``), leftovers of
interrupted writes (``.<name>.tmp-*``, ``.<name>.old-*``, the feature store's ``_staging-*``) and feature
stores of other code (another ``v=`` than the current contracts', which nothing reads).

The registry is read first: when it cannot be read nothing is removed (which folders are evidence is unknown).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from retrainer import registry
from retrainer.core.layout import RUN_PREFIX
from retrainer.data.feature_store import store_root
from retrainer.stages.register import RUN_FOLDER_TAG
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)
LEFTOVER_PATTERNS = (".*.tmp-*", ".*.old-*", "_staging-*")


@dataclasses.dataclass
class PrunePlan:
    """Paths under the data root (relative) and why each is kept or may go."""

    kept: dict[str, str] = dataclasses.field(default_factory=dict)
    pruned: dict[str, str] = dataclasses.field(default_factory=dict)
    freed_bytes: int = 0
    dry_run: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _newest_change(path: Path) -> float:
    """The latest modification time of ``path`` or anything under it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:  # removed while we looked: a writer is active, which the time shows
                    continue
    return newest


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _registered_folders(tracking_uri: str, model_name: str) -> dict[str, str]:
    """The run folder (relative to the data root) of every registered version -> which versions."""
    versions = registry.versions(tracking_uri, model_name)
    champion = registry.alias_version(tracking_uri, model_name, registry.CHAMPION)
    out: dict[str, str] = {}
    for v in sorted(versions, key=lambda v: int(v.version)):
        folder = v.tags.get(RUN_FOLDER_TAG)
        if folder:
            what = f"v{v.version}" + (" (champion)" if str(v.version) == champion else "")
            out[folder] = f"{out[folder]}, {what}" if folder in out else f"registered as {model_name} {what}"
    return out


def plan_prune(
    data_root: str | Path, workload: str, tracking_uri: str, keep_last: int, min_age_s: float, now: float | None = None
) -> PrunePlan:
    """Decide, without removing anything, what of ``workload``'s folders under ``data_root`` may go."""
    root, spec = Path(data_root), get_workload(workload)
    now = time.time() if now is None else now
    registered = _registered_folders(tracking_uri, spec.registered_model)  # first: no registry, no pruning
    plan = PrunePlan()

    def recent(path: Path) -> bool:
        return now - _newest_change(path) < min_age_s

    runs_dir = root / "runs" / workload
    changed = {p: _newest_change(p) for p in runs_dir.glob(f"date=*/{RUN_PREFIX}*") if p.is_dir()}  # one walk each
    for n, folder in enumerate(sorted(changed, key=changed.__getitem__, reverse=True)):
        rel = folder.relative_to(root).as_posix()
        if rel in registered:
            plan.kept[rel] = registered[rel]
        elif n < keep_last:
            plan.kept[rel] = f"one of the newest {keep_last} runs"
        elif now - changed[folder] < min_age_s:
            plan.kept[rel] = f"changed in the last {min_age_s / 3600:g} h (may be running)"
        else:
            plan.pruned[rel] = "registered nothing and is not one of the newest runs"

    current = store_root(root, spec)
    for store in current.parent.glob("v=*"):
        if store != current and store.is_dir():
            rel = store.relative_to(root).as_posix()
            if recent(store):
                plan.kept[rel] = f"a feature store of other code, changed in the last {min_age_s / 3600:g} h"
            else:
                plan.pruned[rel] = "a feature store of other code (its contracts or feature version differ)"

    gone = [root / p for p in plan.pruned]
    for base in (runs_dir, current):
        for pattern in LEFTOVER_PATTERNS:
            for path in base.rglob(pattern) if base.is_dir() else []:
                if any(path.is_relative_to(g) for g in gone) or recent(path):
                    continue
                plan.pruned[path.relative_to(root).as_posix()] = "left by an interrupted write"
    return plan


def prune(
    data_root: str | Path,
    workload: str,
    tracking_uri: str,
    keep_last: int,
    min_age_s: float,
    dry_run: bool = False,
) -> PrunePlan:
    """:func:`plan_prune`, then remove what it says may go (unless ``dry_run``); the plan says what was freed."""
    root = Path(data_root)
    plan = plan_prune(root, workload, tracking_uri, keep_last, min_age_s)
    plan.dry_run = dry_run
    for rel, why in sorted(plan.pruned.items()):
        path = root / rel
        if not path.exists() and not path.is_symlink():
            continue
        plan.freed_bytes += _size(path)
        log.info("%s %s (%s)", "would remove" if dry_run else "removing", rel, why)
        if dry_run:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        parent = path.parent
        if parent.name.startswith("date=") and not any(parent.iterdir()):
            parent.rmdir()
    log.info(
        "prune %s: %d kept, %d %s, %.1f MiB", workload, len(plan.kept), len(plan.pruned),
        "to remove" if dry_run else "removed", plan.freed_bytes / 2**20,
    )  # fmt: skip
    return plan
