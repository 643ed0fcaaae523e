"""Content fingerprints: what identifies a training set and a training run across retries and reruns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def parquet_parts(folder: str | Path) -> list[Path]:
    """The data files of a Spark Parquet folder, in a stable order."""
    parts = sorted(p for p in Path(folder).glob("*.parquet") if not p.name.startswith((".", "_")))
    if not parts:
        raise FileNotFoundError(f"no Parquet part files in {folder}")
    return parts


def folder_fingerprint(folder: str | Path) -> str:
    """Hash of the part files' bytes in part order (file names carry a per-write UUID, so they are left out)."""
    h = hashlib.sha256()
    for part in parquet_parts(folder):
        with open(part, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def dict_fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
