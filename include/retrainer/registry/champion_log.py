"""What a downstream DAG does with champion events: keep the history, act only on the champion of now.

One JSON file per champion version (``_champions/<model>/v<N>.json``) records every announced champion:
the history. Events arrive in the order their runs completed, not the order the alias moved, and a
cleared task can deliver one twice, so a consumer never acts on an event's version on the event's word:
it resolves ``@champion`` in the registry (its own tracking URI, not one from the event) and acts only
when that is the event's version. Acting here is pointing ``current.json`` at it, the template for batch
scoring or a deployment: everything it needs (model URI, version, metrics, run date) is in the event."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from retrainer.core import atomic

log = logging.getLogger(__name__)
CURRENT = "current.json"  # the champion a consumer acted on last: what downstream serves


def champion_log_folder(data_root: str | Path, model: str) -> Path:
    return Path(data_root) / "_champions" / model


def _checked(news: dict[str, Any]) -> tuple[str, str]:
    model, version = str(news["model"]), str(news["version"])
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model) or not version.isdigit():
        raise ValueError(f"champion event names model {model!r} version {version!r}: not a registry name")
    return model, version


def record_champions(announcements: list[dict[str, Any]], data_root: str | Path) -> list[Path]:
    """Keyed by version: the same event delivered twice (a cleared run) replaces its own file."""
    paths = []
    for news in announcements:
        model, version = _checked(news)
        paths.append(atomic.write_json(champion_log_folder(data_root, model) / f"v{version}.json", news))
    return paths


def act_on_champions(
    announcements: list[dict[str, Any]], data_root: str | Path, tracking_uri: str
) -> dict[str, list[str]]:
    """Record every announced champion, then act on those that are champion now (``@champion`` read from
    the registry: an unreadable registry raises ``RegistryUnavailable`` and the task is retried; it never
    acts on a guess). Returns the ``model vN`` acted on and those skipped as no longer champion."""
    from retrainer import registry

    record_champions(announcements, data_root)
    done: dict[str, list[str]] = {"acted": [], "skipped": []}
    now: dict[str, str | None] = {}
    for news in announcements:
        model, version = _checked(news)
        if model not in now:
            now[model] = registry.alias_version(tracking_uri, model, registry.CHAMPION)
        if now[model] != version:
            log.warning("%s v%s was announced as champion, but the champion is now %s: not acted on",
                        model, version, f"v{now[model]}" if now[model] else "nobody")  # fmt: skip
            done["skipped"].append(f"{model} v{version}")
            continue
        atomic.write_json(champion_log_folder(data_root, model) / CURRENT, news)
        log.info("acting on %s v%s, the champion (%s)", model, version, news.get("model_uri"))
        done["acted"].append(f"{model} v{version}")
    return done
