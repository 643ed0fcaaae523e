"""The promotion policy: when a version may become ``champion``, and the lock around moving it.

Three trust rules live here, and only here:

* **Forward in time only.** A run dated before the champion's run date (a backfill, a rerun of an
  old date) registers its version and is compared, but never moves ``champion`` or ``challenger``.
* **An unreadable registry is an error**, retried by Airflow, never read as "no champion yet"
  (:func:`retrainer.registry.version_by_alias` raises :class:`~retrainer.registry.RegistryUnavailable`).
* **One promotion at a time.** ``register`` re-reads the champion and moves the alias inside
  :func:`promotion_lock`; in Airflow the register task also runs in a one-slot pool
  (:data:`POOL`), which covers runs on other machines that do not share the lock's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

from retrainer import registry
from retrainer.core import locks
from retrainer.core.results import EvaluationResult, RegistrationResult

log = logging.getLogger(__name__)

POOL = "retrainer_promotion"  # the Airflow pool (one slot) that the register task runs in
RUN_DATE_TAG = "run_date"


@dataclasses.dataclass(frozen=True)
class Holder:
    """The version an alias points at and the run date of the data it was trained on."""

    version: str
    run_date: dt.date | None


def holder(tracking_uri: str, model_name: str, alias: str) -> Holder | None:
    """Who holds ``alias`` now; None only when the model or the alias does not exist."""
    mv = registry.version_by_alias(tracking_uri, model_name, alias)
    if mv is None:
        return None
    tag = mv.tags.get(RUN_DATE_TAG)
    return Holder(str(mv.version), dt.date.fromisoformat(tag) if tag else None)


def older_than(run_date: dt.date, current: Holder | None, alias: str = registry.CHAMPION) -> str | None:
    """Why a run dated ``run_date`` may not take ``alias`` from ``current`` on dates alone, or None if it may."""
    if current is None:
        return None
    if current.run_date is None:
        return f"{alias} v{current.version} has no {RUN_DATE_TAG} tag, so this run cannot be shown to be newer"
    if run_date < current.run_date:
        return (
            f"this run's date {run_date} is before {alias} v{current.version}'s {current.run_date} "
            f"(a backfill or a rerun of an old date): the {alias} only moves forward in time"
        )
    return None


@contextlib.contextmanager
def promotion_lock(data_root: str, model_name: str, timeout_s: float = 900.0) -> Generator[None, None, None]:
    """An exclusive lock per registered model, held from re-reading the champion to moving it.

    A file lock under the data root: every runner of one deployment (DAG tasks, the CLI, ``dags
    test``) shares that root. Released by the kernel if the holder dies, so a crash cannot wedge it.
    """
    path = Path(data_root) / "_locks" / f"promotion.{model_name}.lock"
    with locks.exclusive(path, "promotion lock", timeout_s):
        yield


def announcement(registration: RegistrationResult, evaluation: EvaluationResult, run_date: dt.date) -> dict[str, Any]:
    """What a champion change tells the world (the Asset event's metadata and the alert's details):
    small, JSON-safe, and without credentials from the tracking URI."""
    return {
        "model": registration.registered_model,
        "version": registration.version,
        "model_uri": f"models:/{registration.registered_model}/{registration.version}",
        "run_date": run_date.isoformat(),
        "previous_version": registration.champion_before,
        "headline": evaluation.headline,
        "metrics": dict(evaluation.new),
        "decision": registration.decision,
        "tracking_uri": re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", registration.tracking_uri),
    }
