"""Atomic writes: a reader sees the old artefact or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable: without it a power cut can lose a commit already reported."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """Write to a sibling, flush it to disk, rename it over ``path``, flush the folder: after a crash or a
    power cut the file is the old one or the new one, never empty or half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path, "tmp")
    try:
        with tmp.open("w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_record(path: str | Path) -> Any | None:
    """A cache record (a per-day check, a store marker) or None when there is none to trust: missing, empty
    or not JSON (a disk that filled up, a copy cut short) reads as absent, so the work is done again instead
    of every later run failing on the same file. Never for results a stage hands on: those must fail loudly."""
    import logging

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        logging.getLogger(__name__).warning("%s is unreadable (%s): treated as absent, done again", path, exc)
        return None


def replace_dir(tmp_dir: str | Path, target: str | Path) -> Path:
    """Move a fully written ``tmp_dir`` into place, replacing ``target`` if it exists.

    Two renames on one filesystem: the old folder is moved aside first and removed last, so a
    crash in between leaves either the old or the new folder under a recognisable name.
    """
    tmp_dir, target = Path(tmp_dir), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = _tmp_sibling(target, "old")
        os.replace(target, old)
    os.replace(tmp_dir, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Generator[Path, None, None]:
    """Yield an empty sibling folder to write into; on success it replaces ``target``, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
