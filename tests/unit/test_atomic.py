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
