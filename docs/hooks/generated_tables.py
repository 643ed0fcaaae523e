"""MkDocs hook: tables generated from the code, so the docs cannot drift from it.

``<!-- generated: parameters Tuning -->`` (or ``Engines``, ``RunIdentity``, ``Deployment``) becomes the
table of that group, read from its declarations in :mod:`retrainer.core.config` or
:mod:`retrainer.core.deployment`; ``<!-- generated: layers -->``
becomes the package's rooms from the import-layer rule the tests enforce.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- generated: (\w+)(?: (\w+))? -->")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _bounds(spec: Any) -> str:
    parts = []
    if spec.exclusive_minimum is not None:
        parts.append(f"> {spec.exclusive_minimum:g}")
    if spec.minimum is not None:
        parts.append(f"≥ {spec.minimum:g}")
    if spec.maximum is not None:
        parts.append(f"≤ {spec.maximum:g}")
    if spec.choices:
        parts.append(", ".join(f"`{c}`" for c in spec.choices))
    if spec.pattern:
        parts.append(f"matches `{spec.pattern}`")
    return "; ".join(parts) or "–"


def parameter_table(group_name: str) -> str:
    from retrainer.core import config, deployment, params

    group = getattr(config, group_name, None) or getattr(deployment, group_name)
    rows = ["| parameter | CLI flag | environment | default | bounds | changes the model | what it does |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in params.parameters(group):
        default = "(from the environment)" if p.spec.env and p.default is None else p.default
        rows.append(
            f"| `{p.name}` | {'–' if group is deployment.Deployment else f'`{p.flag}`'} | "
            f"{f'`{p.spec.env}`' if p.spec.env else '–'} | "
            f"{_cell('–' if default is None else f'`{default}`')} | {_cell(_bounds(p.spec))} | "
            f"{'yes' if p.spec.changes_model else 'no'} | {_cell(p.spec.help)} |"
        )
    return "\n".join(rows)


def layers_table() -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from support.import_layers import LAYERS
    finally:
        sys.path.remove(str(ROOT / "tests"))
    import importlib

    rows = ["| height | sub-package | may import | what it holds |", "|---|---|---|---|"]
    for height, rooms in enumerate(LAYERS):
        below = ", ".join(f"`{r}`" for lower in LAYERS[:height] for r in lower) or "nothing of retrainer"
        for room in rooms:
            doc = (importlib.import_module(f"retrainer.{room}").__doc__ or "").strip().split("\n\n")[0]
            rows.append(f"| {height} | `retrainer.{room}` | {below} | {_cell(doc)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "parameters":
            return parameter_table(arg or "Tuning")
        if kind == "layers":
            return layers_table()
        raise ValueError(f"unknown generated table {kind!r}")

    return MARKER.sub(replace, markdown)
