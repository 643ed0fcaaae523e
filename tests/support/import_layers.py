"""The package's rooms and the one direction imports may run between them, checked from the source.

Each sub-package of ``retrainer`` is a layer; a module may import its own layer's package and any layer
below it, never one above, and siblings that share a layer never import each other. Only the Airflow
adapter imports Airflow inside the package (the DAG files and ``plugins/`` are outside it).
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

# Lowest first. Names on one line are independent rooms at the same height.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # run config and parameters, run window, typed results, layout, atomic writes, locks, errors
    ("spec",),  # what a model is asked to do: data contract, objectives, metrics
    ("spark",),  # the Spark session and header-checked reads of landed files
    ("workloads",),  # one module per prediction problem: contract, objective, Spark features
    # the engines' work: Spark/GX, TensorFlow, MLflow, the SavedModel; and evaluation's slices and intervals
    ("data", "training", "registry", "serving", "evaluation"),
    ("stages",),  # orchestration only: each stage a function over the rooms below
    ("runners",),  # CLI, local pipeline, summary, the Airflow adapter, the Spark job entry point
    ("devtools",),  # local servers, a standalone Spark cluster for tests
)
AIRFLOW_ALLOWED = {
    "retrainer.runners.airflow_adapter",
    # The Kubernetes launcher gets its API client from the provider's KubernetesHook (the connection);
    # the team-stack issue replaces the launcher with the provider's KubernetesJobOperator.
    "retrainer.training.kubernetes_pods",
}


@dataclasses.dataclass(frozen=True)
class Violation:
    module: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module} imports {self.imported}: {self.why}"


def module_name(package_dir: Path, path: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, package_dir: Path) -> Iterator[str]:
    """Every module named by an import anywhere in the file, type-checking and function-level ones too."""
    root = package_dir.parent
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # ``from retrainer.x import y`` names module x.y when y is a module
                full = f"{node.module}.{alias.name}"
                as_path = root / full.replace(".", "/")
                yield full if as_path.with_suffix(".py").exists() or as_path.is_dir() else node.module


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules it imports (of this package, and ``airflow`` roots)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        name = module_name(package_dir, path)
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {m for m in _imports(tree, package_dir) if m.split(".")[0] in (package_dir.name, "airflow")}
    return graph


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _height(room: str | None) -> int | None:
    if room is None:
        return -1  # the package's own __init__: version and docstring, below everything
    return next((h for h, rooms in enumerate(LAYERS) if room in rooms), None)


def violations(package_dir: Path) -> list[Violation]:
    graph = import_graph(package_dir)
    found: list[Violation] = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            if target.split(".")[0] == "airflow":
                if module not in AIRFLOW_ALLOWED:
                    found.append(Violation(module, target, "only the Airflow adapter imports Airflow"))
                continue
            room, target_room = _room(module), _room(target)
            height, target_height = _height(room), _height(target_room)
            if height is None or target_height is None:
                found.append(Violation(module, target, "a sub-package missing from LAYERS"))
            elif target_height > height:
                found.append(Violation(module, target, f"{target_room} is above {room}"))
            elif target_height == height and room != target_room:
                found.append(Violation(module, target, f"{room} and {target_room} are sibling rooms"))
    return found + [Violation(" -> ".join(c), c[0], "an import cycle") for c in cycles(graph)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each as a list of module names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups
