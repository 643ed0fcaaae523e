"""The package's folders are its architecture: imports run down the layers only, with no cycles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import ROOT
from support.import_layers import LAYERS, import_graph, violations

PACKAGE = ROOT / "include" / "retrainer"


def test_every_sub_package_has_a_place_in_the_layers() -> None:
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert rooms == {room for layer in LAYERS for room in layer}
    assert not [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"], "modules belong in a room"


def test_imports_run_down_the_layers_with_no_cycle() -> None:
    assert import_graph(PACKAGE)["retrainer.stages.train"], "the graph found no imports: the check is blind"
    assert [str(v) for v in violations(PACKAGE)] == []


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "retrainer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.mark.parametrize(
    ("module", "line", "why"),
    [
        ("core/atomic.py", "from retrainer.stages.train import train_model", "stages is above core"),
        ("data/drift.py", "from retrainer.training.model import build_model", "data and training are sibling rooms"),
        ("spec/metrics.py", "from airflow.sdk import task", "only the Airflow adapter imports Airflow"),
        ("core/errors.py", "from retrainer.core.atomic import write_json", "an import cycle"),
    ],
)
def test_the_check_fails_on_an_upward_import_a_sibling_airflow_or_a_cycle(
    package_copy: Path, module: str, line: str, why: str
) -> None:
    if why == "an import cycle":  # errors -> atomic below, and atomic -> errors here
        (package_copy / "core" / "atomic.py").write_text(
            (package_copy / "core" / "atomic.py").read_text() + "\nfrom retrainer.core import errors  # noqa\n"
        )
    path = package_copy / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    assert why in " | ".join(str(v) for v in violations(package_copy))


def test_no_module_in_the_package_shadows_the_standard_library() -> None:
    """A module named like a stdlib one (the old ``calendar.py``) breaks imports when its folder is on
    ``sys.path``, as it is when spark-submit runs the job file from ``runners/``."""
    import sys

    shadowing = [p for p in PACKAGE.rglob("*.py") if p.stem in sys.stdlib_module_names]
    assert shadowing == []
