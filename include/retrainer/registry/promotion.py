"""The promotion policy: when a version may become ``champion``, and the lock around moving it.

Three trust rules live here, and only here:

* **Forward in time only.** A run dated before the champion's run date (a backfill, a rerun of an
  old date) registers its version and is compared, but never moves ``champion`` or ``challenger``.
  The floor does not live only in the alias: every promotion raises a **high-water mark** on the
  registered model (tag :data:`HIGH_WATER_TAG`, the newest promoted run date and its version), so
  deleting the alias or the champion's version never lets an older run through. Lowering or removing it
  is an operator's explicit act (:func:`reset_high_water`, ``retrainer reset-high-water``), logged and
  recorded on the model (:data:`HIGH_WATER_RESET_TAG`).
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
from retrainer.core.results import ApprovalResult, EvaluationResult, RegistrationResult

log = logging.getLogger(__name__)

POOL = "retrainer_promotion"  # the Airflow pool (one slot) that the register task runs in
RUN_DATE_TAG = "run_date"
HIGH_WATER_TAG = "retrainer.high_water"  # on the registered model: "<run date> v<version>" of the newest promotion
HIGH_WATER_RESET_TAG = "retrainer.high_water_reset"  # JSON: the last reset, when, by whom, why, from what


TRAIN_RANGE_TAG = "train_range"  # on each version: "[first day, end day)" of the days its model trained on


@dataclasses.dataclass(frozen=True)
class Holder:
    """The version an alias points at, the run date of the data it was trained on and, as its version's
    tag says, the days it trained on (the text, unparsed: :func:`compared_days` reads it)."""

    version: str
    run_date: dt.date | None
    train_range: str | None = None


def holder(tracking_uri: str, model_name: str, alias: str) -> Holder | None:
    """Who holds ``alias`` now; None only when the model or the alias does not exist."""
    mv = registry.version_by_alias(tracking_uri, model_name, alias)
    if mv is None:
        return None
    tag = mv.tags.get(RUN_DATE_TAG)
    return Holder(str(mv.version), dt.date.fromisoformat(tag) if tag else None, mv.tags.get(TRAIN_RANGE_TAG))


def compared_days(eval_range: tuple[str, str], champion: Holder) -> tuple[tuple[str, str] | None, str]:
    """The evaluation days on which a run's model and ``champion`` are compared: only days the champion
    did not train on (the run's own model never trained on its evaluation days). Returns the range and a
    note for the decision, or None and why they cannot be compared fairly (the run is then held): the
    champion's days unknown (no or a malformed tag: never read as "none"), or too few days left."""
    from retrainer.core.deployment import deployment

    start, end = (dt.date.fromisoformat(d) for d in eval_range)
    name = f"champion v{champion.version}"
    match = re.fullmatch(r"\[(\d{4}-\d{2}-\d{2}), (\d{4}-\d{2}-\d{2})\)", champion.train_range or "")
    if match is None:
        return None, (
            f"{name}'s {TRAIN_RANGE_TAG} tag is {champion.train_range!r}: the days it trained on are unknown, so "
            "it cannot be shown that this run's evaluation days are new to it"
        )
    seen_from, seen_to = (dt.date.fromisoformat(d) for d in match.groups())
    fair_start = max(start, seen_to) if seen_from < end else start
    least = deployment().min_eval_days
    if (end - fair_start).days < least:
        return None, (
            f"{name} trained on {champion.train_range}, which leaves {max(0, (end - fair_start).days)} of this "
            f"run's evaluation days [{start}, {end}) new to it; at least {least} are needed (RETRAINER_MIN_EVAL_DAYS)"
        )
    if fair_start == start:
        return eval_range, ""
    return (fair_start.isoformat(), eval_range[1]), (
        f"compared on [{fair_start}, {end}) only: {name} trained on {champion.train_range}"
    )


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


def bar(asked: float) -> tuple[float, str]:
    """The min_gain a run is held to and how the decision says it: the run's own (its trigger form's) only
    when it is at or above the deployment's floor (``RETRAINER_MIN_GAIN_FLOOR``): the form raises the bar,
    never lowers it."""
    from retrainer.core.deployment import deployment

    floor = deployment().min_gain_floor
    if asked >= floor:
        return asked, f"min_gain {asked}"
    return floor, f"min_gain {floor} (the deployment's floor; the run asked for {asked})"


def too_few_eval_days(eval_days: int) -> str | None:
    """Why a run evaluated on ``eval_days`` days may not be promoted (the deployment's minimum), or None."""
    from retrainer.core.deployment import deployment

    least = deployment().min_eval_days
    if eval_days >= least:
        return None
    return (
        f"evaluated on {eval_days} day(s); this deployment promotes only on at least {least} (RETRAINER_MIN_EVAL_DAYS)"
    )


def mark_text(mark: Holder) -> str:
    """How a mark is written in the tag, the reset record and the CLI: ``"<run date> v<version>"``, the form
    :func:`high_water` parses back."""
    if mark.run_date is None:
        raise ValueError(f"a high-water mark needs a run date (v{mark.version} has none)")
    return f"{mark.run_date.isoformat()} v{mark.version}"


def high_water(tracking_uri: str, model_name: str) -> Holder | None:
    """The newest promotion ever made (run date and version), or None if none was recorded; an unreadable
    registry or a malformed tag raises: the floor is never read as absent because it could not be read."""
    value = registry.model_tags(tracking_uri, model_name).get(HIGH_WATER_TAG)
    if value is None:
        return None
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2}) v(\d+)", value)
    if match is None:
        raise registry.RegistryUnavailable(
            f"{model_name}'s {HIGH_WATER_TAG} tag is {value!r}, not '<run date> v<version>': fix or reset it "
            "(retrainer reset-high-water) before anything is promoted"
        )
    return Holder(match.group(2), dt.date.fromisoformat(match.group(1)))


def forward_only(tracking_uri: str, model_name: str, run_date: dt.date, champion: Holder | None) -> str | None:
    """Why a run dated ``run_date`` may not become champion on dates alone (against the champion of the
    moment and against the high-water mark), or None if it may."""
    too_old = older_than(run_date, champion)
    if too_old is not None:
        return too_old
    mark = high_water(tracking_uri, model_name)
    if mark is not None and mark.run_date is not None and run_date < mark.run_date:
        return (
            f"this run's date {run_date} is before the newest promotion's {mark.run_date} (v{mark.version}, the "
            f"high-water mark kept on {model_name}, whatever the champion alias says now): the champion only "
            "moves forward in time (an operator may reset the mark: retrainer reset-high-water)"
        )
    return None


def raise_high_water(tracking_uri: str, model_name: str, version: str, run_date: dt.date) -> None:
    """After ``version`` became champion (under the promotion lock): the mark moves to its run date if that
    is newer. A retry after a crash between the alias and the tag raises it then."""
    mark = high_water(tracking_uri, model_name)
    if mark is None or mark.run_date is None or run_date >= mark.run_date:
        registry.configure(tracking_uri).set_registered_model_tag(
            model_name, HIGH_WATER_TAG, mark_text(Holder(version, run_date))
        )


def restore_high_water_if_unmoved(tracking_uri: str, model_name: str, version: str, mark: Holder | None) -> None:
    """After a failed alias move: put the high-water mark back to ``mark`` (what it was before this attempt raised
    it) if the champion is not ``version``. Best effort, never raising over the alias error: a mark left raised
    only holds runs dated before it (the strict side) until a retry or an operator (retrainer reset-high-water)
    lowers it."""
    try:
        if registry.alias_version(tracking_uri, model_name, registry.CHAMPION) == version:
            return  # the registry moved the alias although the call failed: the mark belongs to it
        client = registry.configure(tracking_uri)
        if mark is None:
            client.delete_registered_model_tag(model_name, HIGH_WATER_TAG)
        else:
            client.set_registered_model_tag(model_name, HIGH_WATER_TAG, mark_text(mark))
    except Exception:  # noqa: BLE001
        log.warning("could not restore %s's high-water mark after a failed promotion; left raised", model_name,
                    exc_info=True)  # fmt: skip


def reset_high_water(
    tracking_uri: str, data_root: str, model_name: str, reason: str, to: Holder | None = None
) -> Holder | None:
    """An operator lowers (``to``) or removes the high-water mark, for example after withdrawing a model
    trained on bad data; returns the mark it replaced. Under the promotion lock; logged as a warning and
    recorded on the model (who, when, why, from what) so that the act is visible in the registry."""
    import getpass
    import json

    if not reason.strip():
        raise ValueError("resetting the high-water mark needs a reason")
    with promotion_lock(data_root, model_name):
        before = high_water(tracking_uri, model_name)
        client = registry.configure(tracking_uri)
        if to is None:
            if before is not None:
                client.delete_registered_model_tag(model_name, HIGH_WATER_TAG)
        else:
            client.set_registered_model_tag(model_name, HIGH_WATER_TAG, mark_text(to))
        record = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "by": getpass.getuser(), "reason": reason,
            "from": None if before is None else mark_text(before),
            "to": None if to is None else mark_text(to),
        }  # fmt: skip
        client.set_registered_model_tag(model_name, HIGH_WATER_RESET_TAG, json.dumps(record, sort_keys=True))
    log.warning("high-water mark of %s reset from %s to %s by %s: %s", model_name, record["from"], record["to"],
                record["by"], reason)  # fmt: skip
    return before


def approval_hold(approval: ApprovalResult | None) -> tuple[str | None, str]:
    """With ``RETRAINER_REQUIRE_APPROVAL=yes``: (why the promotion is held, "") unless ``approval`` chose Approve,
    then (None, who approved and when, for the decision). Without the setting: (None, ""). A run that never asked
    (``retrainer run``, a DAG parsed without the approval task) is held: the setting is the deployment's, not the
    runner's."""
    from retrainer.core.deployment import deployment

    if deployment().require_approval != "yes":
        return None, ""
    if approval is None or not approval.approved:
        return (
            "held: this deployment promotes only with a person's approval (RETRAINER_REQUIRE_APPROVAL=yes), and "
            + (
                f"the answer was {approval.chosen}"
                if approval
                else "none was given (only the DAG's approval task asks)"
            )
        ), ""
    return None, f"approved by {approval.by or 'someone'} at {approval.at or '?'}"


@contextlib.contextmanager
def promotion_lock(data_root: str, model_name: str, timeout_s: float = 900.0) -> Generator[None, None, None]:
    """An exclusive lock per registered model, held from re-reading the champion to moving it.

    A file lock under the data root: every runner of one deployment (DAG tasks, the CLI, ``dags
    test``) shares that root. Released by the kernel if the holder dies, so a crash cannot wedge it.
    """
    path = Path(data_root) / "_locks" / f"promotion.{model_name}.lock"
    with locks.exclusive(path, "promotion lock", timeout_s):
        yield


def mark_published(intent_path: Path, version: str) -> None:
    """The champion change to ``version`` was announced (the Asset event; for ``retrainer run``, the summary):
    a later retry of register must not announce it again. Until then a retry announces it (the intent)."""
    from retrainer.core import atomic

    intent = read_intent(intent_path)
    if intent.get("version") == version:
        atomic.write_json(intent_path, {**intent, "published": True})


def read_intent(intent_path: Path) -> dict[str, Any]:
    """The champion change a register attempt recorded before moving the alias (version, champion before,
    decision, published), or ``{}`` if no attempt of this run got that far."""
    from retrainer.core import atomic

    return atomic.read_json(intent_path) if intent_path.exists() else {}


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
