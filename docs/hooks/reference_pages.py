"""Write docs/reference/<room>.md: one API page per sub-package, a section per module (run after adding a
module; ``tests/unit/test_docs.py`` fails while a module has no section)."""

from __future__ import annotations

import pkgutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "retrainer"


def main() -> None:
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    for room in rooms:
        body = [f"# `retrainer.{room}`\n", f"::: retrainer.{room}\n    options:\n      members: false\n"]
        for module in sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE / room)])):
            body.append(f"## `retrainer.{room}.{module}`\n\n::: retrainer.{room}.{module}\n")
        (ROOT / "docs" / "reference" / f"{room}.md").write_text("\n".join(body))


if __name__ == "__main__":
    main()
