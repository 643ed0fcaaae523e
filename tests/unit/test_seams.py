"""The seams hold: stage and training code name no workload and assume no objective; stages are typed."""

from __future__ import annotations

import inspect
import re
import typing

import pytest

from support import ROOT

PACKAGE = ROOT / "include" / "retrainer"
GENERIC = sorted(
    [*(PACKAGE / "stages").glob("*.py"), *(PACKAGE / "training").glob("*.py")]
    + [PACKAGE / m for m in ("runners/run_summary.py", "runners/cli.py", "runners/pipeline.py")]
    + [PACKAGE / m for m in ("registry/__init__.py", "registry/promotion.py", "core/layout.py")]
)
WORKLOAD_WORDS = ("flight_delay", "arrival_delay", "is_late", "arr_delay", "nycflights")
OBJECTIVE_WORDS = ("sigmoid", "binary_crossentropy", "auc", "rmse", "probability")


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_generic_code_names_no_workload_and_no_objective(path) -> None:
    text = path.read_text().lower()
    for word in WORKLOAD_WORDS + OBJECTIVE_WORDS:
        assert not re.search(rf"\b{word}\b", text), f"{path.name} mentions {word!r}"


@pytest.mark.parametrize("stage", ["check_raw", "features", "validate", "train", "evaluate", "export", "register"])
def test_stages_take_and_return_typed_results_never_dicts(stage: str) -> None:
    import importlib

    from retrainer.core.config import RunConfig
    from retrainer.core.results import StageResult
    from retrainer.workloads import RunContext

    module = importlib.import_module(f"retrainer.stages.{stage}")
    functions = [  # the stage entry points: public functions of the module that take the run
        f
        for name, f in inspect.getmembers(module, inspect.isfunction)
        if f.__module__ == module.__name__ and not name.startswith("_") and "run" in inspect.signature(f).parameters
    ]
    assert functions, stage
    for fn in functions:
        hints = typing.get_type_hints(fn)
        ret = hints.pop("return")
        assert isinstance(ret, type) and issubclass(ret, StageResult), (fn.__name__, ret)
        assert hints.pop("run") == RunContext | RunConfig, (fn.__name__, "takes the run's context (or its config)")
        for name, hint in hints.items():
            optional = [a for a in typing.get_args(hint) if a is not type(None)]  # X | None: an input given sometimes
            hint = optional[0] if len(optional) == 1 and type(None) in typing.get_args(hint) else hint
            assert isinstance(hint, type) and issubclass(hint, StageResult), (fn.__name__, name, hint)
