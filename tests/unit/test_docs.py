"""The docs build strictly, the README stays one screen, and the generated parts cover the code."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

PACKAGE = ROOT / "include" / "retrainer"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    proc = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_the_readme_is_one_screen_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links and [link for link in links if not (ROOT / link).exists()] == []
    for command in ("make run", "make test", "make test-tools", "make test-quick"):
        assert command in readme, command


def test_the_parameter_tables_are_generated_from_every_declared_parameter(site: Path) -> None:
    from retrainer.core.config import all_parameters

    page = (site / "parameters" / "index.html").read_text()
    assert "<!-- generated" not in page
    for p in all_parameters():
        assert f"<code>{p.name}</code>" in page and f"<code>{p.flag}</code>" in page, p.name


def test_the_layer_table_and_the_api_reference_cover_every_module(site: Path) -> None:
    architecture = (site / "architecture" / "index.html").read_text()
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    for room in rooms:
        assert f"<code>retrainer.{room}</code>" in architecture, room
        reference = (ROOT / "docs" / "reference" / f"{room}.md").read_text()
        for module in pkgutil.iter_modules([str(PACKAGE / room)]):
            assert f"::: retrainer.{room}.{module.name}\n" in reference, f"{room}.{module.name} has no API page"
    assert "days_between" in (site / "reference" / "core" / "index.html").read_text()  # rendered, not just named
