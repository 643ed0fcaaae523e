"""The champion history a downstream DAG keeps: one JSON file per champion version, written when the
champion Asset's event arrives. The template for acting on a new champion (batch scoring, a deploy):
everything it needs (model URI, version, metrics, run date) is in the event's metadata."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from retrainer.core import atomic


def champion_log_folder(data_root: str | Path, model: str) -> Path:
    return Path(data_root) / "_champions" / model


def record_champions(announcements: list[dict[str, Any]], data_root: str | Path) -> list[Path]:
    """Keyed by version: the same event delivered twice (a cleared run) replaces its own file."""
    paths = []
    for news in announcements:
        model, version = str(news["model"]), str(news["version"])
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", model) or not version.isdigit():
            raise ValueError(f"champion event names model {model!r} version {version!r}: not a registry name")
        paths.append(atomic.write_json(champion_log_folder(data_root, model) / f"v{version}.json", news))
    return paths
