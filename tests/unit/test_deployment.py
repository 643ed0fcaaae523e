"""Every RETRAINER_* setting is declared once (run parameters or deployment settings) and read nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from retrainer.core.deployment import Deployment, DeploymentError, deployment
from support import ROOT

DECLARING = {ROOT / "include/retrainer/core/config.py", ROOT / "include/retrainer/core/deployment.py"}


def _env_reads(path: Path) -> list[tuple[int, str]]:
    """``os.environ.get("RETRAINER_...")``, ``os.getenv(...)`` and ``os.environ["RETRAINER_..."]`` reads."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        key = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = ast.unparse(node.func)
            if name in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                key = node.args[0].value
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if ast.unparse(node.value) in ("os.environ", "environ") and isinstance(node.slice, ast.Constant):
                key = node.slice.value
        if isinstance(key, str) and key.startswith("RETRAINER_"):
            found.append((node.lineno, key))
    return found


def test_no_module_reads_a_retrainer_setting_it_does_not_declare() -> None:
    files = [p for d in ("include", "plugins", "dags") for p in (ROOT / d).rglob("*.py")]
    reads = {str(p.relative_to(ROOT)): _env_reads(p) for p in files if p not in DECLARING}
    assert {k: v for k, v in reads.items() if v} == {}
    assert _env_reads(ROOT / "include/retrainer/core/config.py"), "the scan is blind: config reads its own"


def test_settings_come_from_the_environment_and_bad_values_name_the_variable(monkeypatch) -> None:
    assert deployment().training_queue == Deployment().training_queue
    monkeypatch.setenv("RETRAINER_TRAINING_QUEUE", "training")
    monkeypatch.setenv("RETRAINER_SHUFFLE_PARTITIONS", "3")
    assert (deployment().training_queue, deployment().shuffle_partitions) == ("training", 3)
    monkeypatch.setenv("RETRAINER_SPARK_UI", "maybe")
    with pytest.raises(DeploymentError, match="RETRAINER_SPARK_UI: spark_ui must be one of"):
        deployment()
    monkeypatch.delenv("RETRAINER_SPARK_UI")
    monkeypatch.setenv("RETRAINER_GPU_POOL_SLOTS", "0")
    with pytest.raises(DeploymentError, match="RETRAINER_GPU_POOL_SLOTS: gpu_pool_slots must be >= 1"):
        deployment()


def test_the_train_task_goes_to_the_declared_queue(monkeypatch) -> None:
    """The DAG reads the queue when it is parsed; the training operator's GPU work uses the same one."""
    from retrainer_plugins.training_operator import TensorFlowTrainOperator

    monkeypatch.setenv("RETRAINER_TRAINING_QUEUE", "gpu-queue")
    op = TensorFlowTrainOperator(task_id="train", workload="flight_delay", validated={}, accelerator="gpu",
                                 gpus_per_worker=1)  # fmt: skip
    assert op.queue == "gpu-queue" and op.pool == "gpu"


def test_a_distributed_executor_never_falls_back_to_the_embedded_stores() -> None:
    """A Celery (or Kubernetes) worker without the shared data root and MLflow server would write to a
    private folder and SQLite registry and report success: the task fails naming what is missing."""
    from retrainer.core.config import ConfigError
    from retrainer.runners.airflow_adapter import refuse_embedded_stores

    shared = {"RETRAINER_DATA_ROOT": "/shared/data", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    refuse_embedded_stores("CeleryExecutor", shared)  # a team stack: fine
    refuse_embedded_stores("LocalExecutor", {})  # one machine: the embedded defaults are the point
    with pytest.raises(ConfigError, match="RETRAINER_DATA_ROOT is not set; MLFLOW_TRACKING_URI is not set"):
        refuse_embedded_stores("CeleryExecutor", {})
    local = shared | {"MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"}
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI is a SQLite file .* local to this worker"):
        refuse_embedded_stores("airflow.providers.cncf.kubernetes.executors.KubernetesExecutor", local)
