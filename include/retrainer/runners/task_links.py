"""The links a task shows in Airflow beside its log (its *extra links*): the run's MLflow run, the registered model
version, the evidence report, the Data Docs of the gate the task ran and the workload's gates' history.

Airflow works a task's links out in the task's own process as the task ends, whatever its state, and keeps them as
XComs that the UI and the REST API read (``plugins/retrainer_plugins/task_links.py``). They are made here from the
run folder alone, so a task that failed still links what it wrote: a rejected validation's Data Docs are the link an
operator needs most. A link that cannot be made (the stage wrote nothing yet, or no MLflow UI is known for an
embedded store) is empty, and Airflow shows it disabled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from retrainer.core import atomic
from retrainer.core.layout import RunLayout, ValidationFiles
from retrainer.core.results import GateReport, RegistrationResult
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)

MLFLOW_RUN = "MLflow run"
MODEL_VERSION = "Model version"
REPORT = "Evidence report"
RAW_DATA_DOCS = "Raw gate Data Docs"
DATA_DOCS = "Data Docs"
GATES_HISTORY = "Gates' history"
REPORT_ARTIFACT = "report/report.html"  # where register logs the report in the MLflow run


def mlflow_ui(tracking_uri: str) -> str | None:
    """The MLflow UI as a browser reaches it: ``RETRAINER_MLFLOW_UI_URL``, else the tracking URI when tasks log to
    a server; None for an embedded store with no UI named (``make airflow`` names the one it starts)."""
    from retrainer.core.deployment import deployment

    configured = deployment().mlflow_ui_url.strip()
    if configured:
        return configured.rstrip("/")
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def _gate_docs(folder: Path) -> str:
    """The Data Docs of a gate's folder (its report is written whether the gate passed or not)."""
    report = ValidationFiles(folder).report
    if not report.is_file():
        return ""
    return GateReport.from_dict(atomic.read_json(report)).data_docs_uri


def _gates_history(run: RunContext) -> str:
    """The workload's page of every run's gates (:mod:`retrainer.data.docs_history`)."""
    from retrainer.data.docs_history import history_page

    page = history_page(run.config.engines.data_root, run.config.run.workload)
    return page.as_uri() if page.is_file() else ""


def _training_run(layout: RunLayout) -> dict[str, str]:
    """The MLflow run ``train`` opened for this run (id, experiment, tracking URI), or {}."""
    record = atomic.read_record(layout.mlflow_run) if layout.mlflow_run.is_file() else None
    return record if isinstance(record, dict) else {}


def _mlflow_run(run: RunContext) -> str:
    """The run's MLflow run page: register's run once it ran, else the one train opened (its curves stream there)."""
    registration = run.layout.load_optional(RegistrationResult)
    run_id = registration.mlflow_run_id if registration else _training_run(run.layout).get("run_id", "")
    ui = mlflow_ui(run.config.engines.tracking_uri)
    return f"{ui}/#/runs/{run_id}" if ui and run_id else ""


def _model_version(run: RunContext) -> str:
    registration = run.layout.load_optional(RegistrationResult)
    ui = mlflow_ui(run.config.engines.tracking_uri)
    if not (ui and registration):
        return ""
    return f"{ui}/#/models/{quote(registration.registered_model)}/versions/{registration.version}"


def _report(run: RunContext) -> str:
    """The report as logged to the MLflow run (its artifact page) when a UI is known, else the file register wrote."""
    registration = run.layout.load_optional(RegistrationResult)
    if registration is None or not run.layout.report.is_file():
        return ""
    ui = mlflow_ui(run.config.engines.tracking_uri)
    if ui is None:
        return run.layout.report.as_uri()
    opened = _training_run(run.layout)  # the run train opened is register's run unless MLflow was down then
    experiment = opened.get("experiment_id") if opened.get("run_id") == registration.mlflow_run_id else None
    if experiment is None:
        from retrainer import registry

        info = registry.configure(registration.tracking_uri).get_run(registration.mlflow_run_id).info
        experiment = info.experiment_id
    return f"{ui}/#/experiments/{experiment}/runs/{registration.mlflow_run_id}/artifacts/{REPORT_ARTIFACT}"


RESOLVERS: dict[str, Callable[[RunContext], str]] = {
    MLFLOW_RUN: _mlflow_run,
    MODEL_VERSION: _model_version,
    REPORT: _report,
    RAW_DATA_DOCS: lambda run: _gate_docs(run.layout.raw_gate),
    DATA_DOCS: lambda run: _gate_docs(run.layout.validation),
    GATES_HISTORY: _gates_history,
}

# Which task shows which links (task ids of the retrain DAG).
TASK_LINKS: dict[str, tuple[str, ...]] = {
    "check_raw": (RAW_DATA_DOCS, GATES_HISTORY),
    "validate": (DATA_DOCS, GATES_HISTORY),
    "train": (MLFLOW_RUN,),
    "evaluate": (MLFLOW_RUN, DATA_DOCS),
    "register": (MLFLOW_RUN, MODEL_VERSION, REPORT, DATA_DOCS),
}


def link(name: str, run: RunContext) -> str:
    """The link ``name`` of the run, or "" when it cannot be made; never raises (a link is not worth failing or
    hiding a task's result for: the reason goes to the task's log)."""
    try:
        return RESOLVERS[name](run)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("no %r link for %s: %s: %s", name, run.layout.root, type(exc).__name__, exc)
        return ""
