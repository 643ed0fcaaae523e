"""Who was champion when: every move of the ``champion`` alias, recorded on the registered model.

Why on the model: the registry is the one store every runner of a deployment shares (tasks on other hosts
included), and the question "which model served on 2013-07-04, and why that one" must be answerable from it
after the runs' folders are pruned. Each move is one registered-model tag, ``retrainer.champion.<NNNNNN>``
(sequence numbers from 1; JSON: when, the version and the one before, the action, the run and its date, who,
and why). Moves are only ever added, under the promotion lock; a tag is never rewritten.

Two actions write moves: ``promote`` (``register``, when the gate said promote) and ``rollback`` (an operator,
``retrainer champion rollback``). A champion alias that differs from the last recorded move was moved by
something else (an edit in the MLflow UI, say): :func:`unrecorded_change` names it and ``retrainer champion
history`` prints it, so a bypass of the rules is visible rather than silent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import logging
import re
from typing import Any

from retrainer import registry

log = logging.getLogger(__name__)
TAG_PREFIX = "retrainer.champion."
REASON_CHARS = 1500  # a tag value holds 5000 characters; the decision text is the part that can be long


@dataclasses.dataclass(frozen=True)
class Move:
    seq: int
    at: dt.datetime  # UTC, when the alias moved
    version: str
    before: str | None  # the champion it replaced
    action: str  # "promote" or "rollback"
    by: str
    reason: str
    run_id: str | None = None  # the Airflow (or CLI) run that promoted it
    run_date: str | None = None  # that run's date

    def line(self) -> str:
        came = f"from v{self.before}" if self.before else "first champion"
        run = f", run {self.run_id} dated {self.run_date}" if self.run_id else ""
        when = f"{self.at:%Y-%m-%d %H:%M:%S}Z"
        return f"#{self.seq} {when} v{self.version} ({came}) {self.action} by {self.by}{run}: {self.reason}"


def history(tracking_uri: str, model_name: str) -> list[Move]:
    """Every recorded move, oldest first. A tag that does not parse raises: a history with a hole is not read
    as complete."""
    moves = []
    for key, value in registry.model_tags(tracking_uri, model_name).items():
        if not key.startswith(TAG_PREFIX):
            continue
        try:
            seq, record = int(key.removeprefix(TAG_PREFIX)), json.loads(value)
            moves.append(Move(seq=seq, at=dt.datetime.fromisoformat(record["at"]), version=str(record["version"]),
                              before=record.get("before"), action=record["action"], by=record["by"],
                              reason=record["reason"], run_id=record.get("run_id"),
                              run_date=record.get("run_date")))  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise registry.RegistryUnavailable(f"{model_name}'s tag {key} is not a champion move ({exc})") from exc
    return sorted(moves, key=lambda m: m.seq)


def record_move(
    tracking_uri: str, model_name: str, version: str, before: str | None, action: str, reason: str,
    run_id: str | None = None, run_date: dt.date | None = None,
) -> Move:  # fmt: skip
    """Append one move (call under the promotion lock, right after moving the alias). A retry that finds the
    same move already recorded last (same version, action and run) returns it instead of adding another."""
    moves = history(tracking_uri, model_name)
    last = moves[-1] if moves else None
    if last is not None and (last.version, last.action, last.run_id) == (version, action, run_id):
        return last
    move = Move(seq=(last.seq + 1) if last else 1, at=dt.datetime.now(dt.UTC).replace(microsecond=0),
                version=version, before=before, action=action, by=getpass.getuser(), reason=reason[:REASON_CHARS],
                run_id=run_id, run_date=run_date.isoformat() if run_date else None)  # fmt: skip
    record = {k: v for k, v in dataclasses.asdict(move).items() if k != "seq"} | {"at": move.at.isoformat()}
    registry.configure(tracking_uri).set_registered_model_tag(
        model_name, f"{TAG_PREFIX}{move.seq:06d}", json.dumps(record, sort_keys=True)
    )
    return move


def champion_at(moves: list[Move], when: dt.datetime) -> Move | None:
    """The move that made the champion of moment ``when`` (UTC), or None before the first."""
    earlier = [m for m in moves if m.at <= when]
    return earlier[-1] if earlier else None


def unrecorded_change(tracking_uri: str, model_name: str, moves: list[Move] | None = None) -> str | None:
    """Why the champion alias does not match the history (moved outside retrainer), or None if it does."""
    moves = history(tracking_uri, model_name) if moves is None else moves
    now = registry.alias_version(tracking_uri, model_name, registry.CHAMPION)
    recorded = moves[-1].version if moves else None
    if now == recorded:
        return None
    if recorded is None:
        return (
            f"{model_name}@champion is v{now} but no move is recorded: the history starts with the first promotion "
            "by a retrainer that records it, or the alias was set outside retrainer"
        )
    return (
        f"{model_name}@champion is {'v' + now if now else 'unset'} but the last recorded move named "
        f"{'v' + recorded if recorded else 'no champion'}: the alias was changed outside retrainer (the MLflow UI?)"
    )


class RollbackRefused(ValueError):
    """The rollback asked for cannot be done safely; the message says why."""


def rollback(tracking_uri: str, data_root: str, model_name: str, version: str, reason: str) -> Move:
    """An operator moves ``champion`` back to ``version``, an earlier champion, as a recorded act.

    Refused when there is no reason, when ``version`` never was champion (by the history), when it is
    champion already, or when it carries no SavedModel digest (evaluation could not check it as champion).
    The high-water mark stays where it is: runs dated before the newest promotion stay held, and the next
    run dated after it is compared with the rolled-back champion as with any other. The TensorFlow Serving
    layout follows (the registry's copy of ``version``, checked against its digest).
    """
    from retrainer.registry import promotion
    from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG
    from retrainer.registry.serving_layout import serving_root, stage_from_registry

    if not reason.strip():
        raise RollbackRefused("a rollback needs a reason (it is recorded on the model)")
    if not re.fullmatch(r"\d+", version):
        raise RollbackRefused(f"version {version!r} is not a version number")
    with promotion.promotion_lock(data_root, model_name):
        moves = history(tracking_uri, model_name)
        now = registry.alias_version(tracking_uri, model_name, registry.CHAMPION)
        if now == version:
            raise RollbackRefused(f"{model_name} v{version} is the champion already")
        if version not in {m.version for m in moves}:
            raise RollbackRefused(
                f"{model_name} v{version} was never champion (champions so far: "
                f"{', '.join('v' + m.version for m in moves) or 'none'}): a rollback returns to an earlier champion"
            )
        if SAVED_MODEL_DIGEST_TAG not in registry.version_tags(tracking_uri, model_name, version):
            raise RollbackRefused(
                f"{model_name} v{version} has no {SAVED_MODEL_DIGEST_TAG} tag: its files cannot be checked"
            )
        # the registry's copy downloaded and checked before the alias moves (a bad copy refuses the rollback);
        # after the move, only the record and a rename
        staged = stage_from_registry(tracking_uri, serving_root(data_root), model_name, version)
        try:
            registry.configure(tracking_uri).set_registered_model_alias(model_name, registry.CHAMPION, version)
        except BaseException:
            staged.discard()
            raise
        move = record_move(tracking_uri, model_name, version, now, "rollback", reason)
        staged.activate()
    log.warning("%s champion rolled back from v%s to v%s by %s: %s", model_name, now, version, move.by, reason)
    return move


def as_rows(moves: list[Move]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(m) | {"at": m.at.isoformat()} for m in moves]
