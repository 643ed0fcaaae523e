"""Atomic writes: readers see the old artefact or the new one, and a failed write leaves the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrainer.core import atomic


def test_staged_dir_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "features"
    with atomic.staged_dir(target) as tmp:
        (tmp / "part-0").write_text("v1")
    assert (target / "part-0").read_text() == "v1"

    with pytest.raises(RuntimeError), atomic.staged_dir(target) as tmp:
        (tmp / "part-0").write_text("half of v2")
        raise RuntimeError("the job died")
    assert (target / "part-0").read_text() == "v1"

    with atomic.staged_dir(target) as tmp:
        (tmp / "part-1").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["part-1"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]  # no temporary siblings left


def test_write_json_is_complete_or_absent(tmp_path: Path) -> None:
    path = tmp_path / "a" / "meta.json"
    atomic.write_json(path, {"rows": 3})
    with pytest.raises(TypeError):
        atomic.write_text(path, None)  # type: ignore[arg-type]
    assert atomic.read_json(path) == {"rows": 3}
    assert [p.name for p in path.parent.iterdir()] == ["meta.json"]


def test_a_cache_record_that_is_missing_empty_or_damaged_reads_as_absent(tmp_path: Path, caplog) -> None:
    path = tmp_path / "record.json"
    assert atomic.read_record(path) is None
    path.write_text("")
    assert atomic.read_record(path) is None
    path.write_bytes(b'{"digest": "\xff')
    assert atomic.read_record(path) is None
    assert str(path) in caplog.text and "treated as absent" in caplog.text
    atomic.write_json(path, {"digest": "ab"})
    assert atomic.read_record(path) == {"digest": "ab"}
    with pytest.raises(ValueError):  # a stage result is read strictly: a damaged one fails loudly
        path.write_text("{")
        atomic.read_json(path)


def test_a_write_reaches_the_disk_before_it_is_reported(tmp_path: Path, monkeypatch) -> None:
    """The file's bytes are flushed before the rename and the folder after it: a power cut leaves the old
    or the new file, not an empty one (a zero-length record once wedged a date)."""
    import os
    import stat

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic.write_json(tmp_path / "a" / "meta.json", {"v": 1})
    assert synced == ["file", "dir"]
