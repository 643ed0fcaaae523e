"""Preloading the tasks' libraries where Airflow forks tasks: which processes do it, what it imports, and how
the scheduler (a plugin's listener) and the Celery workers (``celery_config_options``) are wired to it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from retrainer.runners import preload
from support import ROOT


def _fake(module: str, name: str) -> object:
    kind = types.new_class(name)
    kind.__module__, kind.__qualname__ = module, name
    return kind()


@pytest.mark.parametrize(
    ("argv", "executor", "expected"),
    [
        (["airflow", "scheduler"], "LocalExecutor", True),
        (["airflow", "scheduler", "--skip-serve-logs"], "airflow.executors.local_executor.LocalExecutor", True),
        (["airflow", "scheduler"], "CeleryExecutor", False),  # its workers preload instead
        (["airflow", "dag-processor"], "LocalExecutor", False),  # forks parsers, not tasks
        (["airflow", "triggerer"], "LocalExecutor", False),
        (["airflow"], "LocalExecutor", False),
    ],
)
def test_only_the_scheduler_that_forks_tasks_preloads(argv, executor, expected) -> None:
    assert preload.is_scheduler_with_local_executor(executor, argv) is expected


def test_only_a_job_starting_triggers_it_not_a_task_forked_from_the_scheduler(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(preload, "preload", lambda: calls.append(1))
    monkeypatch.setattr(sys, "argv", ["airflow", "scheduler"])  # a task forked from it inherits this argv
    preload.before_fork(_fake("airflow.sdk.execution_time.task_runner", "TaskRunnerMarker"), "LocalExecutor")
    preload.before_fork(_fake("somewhere.else", "Job"), "LocalExecutor")
    preload.before_fork(_fake("airflow.jobs.job", "Job"), "CeleryExecutor")
    assert calls == []
    preload.before_fork(_fake("airflow.jobs.job", "Job"), "LocalExecutor")
    assert calls == [1]
    monkeypatch.setenv(preload.ENV, "0")  # the opt-out
    preload.before_fork(_fake("airflow.jobs.job", "Job"), "LocalExecutor")
    assert calls == [1]


@pytest.mark.parametrize(("value", "on"), [(None, True), ("1", True), ("0", False), ("false", False), ("NO", False)])
def test_the_opt_out(monkeypatch, value, on) -> None:
    if value is None:
        monkeypatch.delenv(preload.ENV, raising=False)
    else:
        monkeypatch.setenv(preload.ENV, value)
    assert preload.enabled() is on


def test_it_preloads_what_the_tasks_import_and_nothing_they_do_not() -> None:
    """Every listed module is installed, and its top-level package is imported somewhere in the package's
    code (a list that outlived a dependency would only cost memory); the heavy ones the tasks use are listed."""
    imported: set[str] = set()
    for path in (ROOT / "include" / "retrainer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    import importlib.util

    for name in preload.MODULES:
        assert importlib.util.find_spec(name) is not None, name
        assert name.split(".")[0] in imported, f"{name} is preloaded but no task imports it"
    assert {"tensorflow", "great_expectations", "mlflow"} <= set(preload.MODULES)


def test_preloading_mlflow_builds_the_package_map_its_log_model_reads() -> None:
    """In a fresh interpreter: the map is empty until the preload, built by it (so forked tasks inherit it)."""
    code = (
        "from mlflow.utils import requirements_utils as r\n"
        "assert r._MODULES_TO_PACKAGES is None\n"
        "from retrainer.runners import preload\n"
        "took = preload.preload(('mlflow',))\n"
        "assert r._MODULES_TO_PACKAGES and 'mlflow' in r._MODULES_TO_PACKAGES, r._MODULES_TO_PACKAGES\n"
        "print(sorted(took))\n"
    )
    assert _python(code).strip() == "['mlflow', 'mlflow installed-package map']"


def test_a_missing_library_is_skipped_not_fatal(caplog) -> None:
    took = preload.preload(("json", "no_such_module_for_retrainer"))
    assert set(took) == {"json"} and "no_such_module_for_retrainer not imported" in caplog.text


def _python(code: str, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_the_plugin_registers_the_listener_with_airflow() -> None:
    """Airflow's own plugins manager loads the plugins folder and its listener manager holds our hook."""
    code = (
        "import json\n"
        "from airflow.listeners.listener import get_listener_manager\n"
        "from airflow import plugins_manager\n"
        "plugins, errors = plugins_manager._get_plugins()\n"
        "names = [type(x).__name__ for p in plugins if p.name == 'retrainer' for x in p.listeners]\n"
        "hooked = [type(x).__name__ for x in get_listener_manager().pm.get_plugins()]\n"
        "print(json.dumps({'names': names, 'hooked': hooked, 'errors': errors}))\n"
    )
    found = json.loads(_python(code, AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins")).splitlines()[-1])
    assert found["errors"] == {}
    assert found["names"] == ["PreloadBeforeFork"] and "PreloadBeforeFork" in found["hooked"]


def test_celery_workers_get_airflows_config_and_preload_before_airflow_freezes_the_gc() -> None:
    """With the option the team stack sets, Airflow's Celery app is built from our config (Airflow's own
    settings, unchanged), and our receiver of ``import_modules`` runs before Airflow's (which calls
    ``gc.freeze()``, so what we import is frozen too)."""
    code = (
        "import json\n"
        "from celery.signals import import_modules\n"
        "from airflow.providers.celery.executors import celery_executor_utils as u\n"
        "from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG\n"
        "from retrainer_plugins.celery_config import CELERY_CONFIG\n"
        "from airflow import plugins_manager\n"
        "plugins, errors = plugins_manager._get_plugins()  # .airflowignore: celery_config.py is no plugin\n"
        "import sys\n"
        "assert not errors and 'celery_config' not in sys.modules, sorted(errors)\n"
        "import weakref\n"
        "live = [r() if isinstance(r, weakref.ReferenceType) else r for _, r in import_modules.receivers]\n"
        "names = [getattr(r, '__name__', '') for r in live]\n"
        "print(json.dumps({'same_config': u.get_celery_configuration() is CELERY_CONFIG,\n"
        "                  'airflow_settings': CELERY_CONFIG == DEFAULT_CELERY_CONFIG, 'receivers': names}))\n"
    )
    env = {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": preload.CELERY_CONFIG_OPTION,
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins")}  # fmt: skip
    found = json.loads(_python(code, **env).splitlines()[-1])
    assert found["same_config"] and found["airflow_settings"]
    ours, airflows = "_preload_task_libraries", "on_celery_import_modules"
    assert found["receivers"].count(ours) == 1 and airflows in found["receivers"]
    assert found["receivers"].index(ours) < found["receivers"].index(airflows), found["receivers"]


def test_the_native_and_compose_stacks_set_the_option(tmp_path: Path) -> None:
    from retrainer.devtools.local_stack import Stack

    secrets = {"AIRFLOW_FERNET_KEY": "k", "AIRFLOW_JWT_SECRET": "s"}
    stack = Stack(project=ROOT, airflow_home=tmp_path, data_root=tmp_path, airflow_db="sqlite://",
                  mlflow_backend="sqlite://", mlflow_artifacts=tmp_path, secrets=secrets,
                  executor="CeleryExecutor", celery_broker="redis://127.0.0.1:6379/0")  # fmt: skip
    assert stack.settings()["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == preload.CELERY_CONFIG_OPTION
    compose = (ROOT / "docker-compose.yaml").read_text()
    assert f"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS: {preload.CELERY_CONFIG_OPTION}" in compose
