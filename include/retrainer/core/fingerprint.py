"""Content fingerprints: what identifies a training set and a training run across retries and reruns."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any


def parquet_parts(folder: str | Path) -> list[Path]:
    """The data files of a Spark Parquet folder, in a stable order."""
    parts = sorted(p for p in Path(folder).glob("*.parquet") if not p.name.startswith((".", "_")))
    if not parts:
        raise FileNotFoundError(f"no Parquet part files in {folder}")
    return parts


def folder_fingerprint(folder: str | Path) -> str:
    """Hash of the part files' data pages in part order: the rows as written, not the files' bytes.

    The footer is left out: parquet-mr writes each column chunk's list of encodings in hash-set order,
    which changes from one JVM to the next, so the same rows written by two processes (a task and its
    cleared rerun) differ in their footers. File names carry a per-write UUID and are left out too.
    """
    h = hashlib.sha256()
    for part in parquet_parts(folder):
        with open(part, "rb") as fh:
            fh.seek(-8, 2)  # ... footer, 4-byte footer length, b"PAR1"
            footer_len, magic = struct.unpack("<I4s", fh.read(8))
            if magic != b"PAR1":
                raise ValueError(f"{part} is not a Parquet file (no PAR1 at its end)")
            remaining = fh.tell() - 8 - footer_len
            fh.seek(0)
            while remaining > 0:
                chunk = fh.read(min(1 << 20, remaining))
                h.update(chunk)
                remaining -= len(chunk)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(folder: str | Path) -> str:
    """SHA-256 over every file under ``folder``: its path relative to the folder and its bytes' digest.

    What export records of the SavedModel it checked, so that register can tell the bytes it uploads are
    those bytes (not another run's export, nor a folder changed since)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
    return h.hexdigest()


def dict_fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
