"""The tasks' extra links worked out from a run folder (the DAG's tasks carrying them: tests/dags; the links Airflow
stores for a real run and serves over its REST API: tests/e2e/test_dag_e2e.py and tests/server/test_make_airflow.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.layout import ValidationFiles
from retrainer.core.results import GateReport, RegistrationResult
from retrainer.runners import task_links
from retrainer.workloads import RunContext

DAY = dt.date(2013, 6, 8)


def _run(tmp_path: Path, tracking: str = "sqlite:///x.db") -> RunContext:
    return RunContext.of(RunConfig.build(DAY, data_root=str(tmp_path), tracking_uri=tracking))


def _gate(folder: Path, success: bool) -> str:
    docs = (folder / "data_docs" / "index.html").as_uri()
    report = GateReport(success=success, failed=[] if success else ["dep_delay: null"], evaluated={"s": 3},
                        results_uri="", data_docs_uri=docs)  # fmt: skip
    atomic.write_json(ValidationFiles(folder).report, report.to_dict())
    return docs


def test_the_mlflow_ui_is_the_setting_else_a_tracking_server_else_none(monkeypatch) -> None:
    monkeypatch.delenv("RETRAINER_MLFLOW_UI_URL", raising=False)
    assert task_links.mlflow_ui("sqlite:////tmp/mlflow.db") is None
    assert task_links.mlflow_ui("http://mlflow:5000/") == "http://mlflow:5000"
    monkeypatch.setenv("RETRAINER_MLFLOW_UI_URL", "https://mlflow.example.org/")
    assert task_links.mlflow_ui("http://mlflow:5000") == "https://mlflow.example.org"


def test_a_run_that_wrote_nothing_has_no_links_and_raises_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RETRAINER_MLFLOW_UI_URL", "http://ui")
    run = _run(tmp_path)
    assert {name: task_links.link(name, run) for name in task_links.RESOLVERS} == dict.fromkeys(
        task_links.RESOLVERS, "")  # fmt: skip


def test_a_failed_gate_still_links_its_data_docs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RETRAINER_MLFLOW_UI_URL", raising=False)
    run = _run(tmp_path)
    raw, validation = _gate(run.layout.raw_gate, False), _gate(run.layout.validation, False)
    assert task_links.link(task_links.RAW_DATA_DOCS, run) == raw
    assert task_links.link(task_links.DATA_DOCS, run) == validation != raw


def test_the_mlflow_links_follow_training_then_registration(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RETRAINER_MLFLOW_UI_URL", "http://ui:5000/")
    run = _run(tmp_path)
    atomic.write_json(run.layout.mlflow_run, {"tracking_uri": "sqlite:///x.db", "run_id": "abc", "experiment_id": "7"})
    assert task_links.link(task_links.MLFLOW_RUN, run) == "http://ui:5000/#/runs/abc"  # train's, before register
    assert task_links.link(task_links.MODEL_VERSION, run) == task_links.link(task_links.REPORT, run) == ""

    registration = RegistrationResult(registered_model="flight delay", version="4", reused_existing_version=False,
                                      mlflow_run_id="abc", promoted=True, decision="promote", aliases={},
                                      tracking_uri="sqlite:///x.db")  # fmt: skip
    run.layout.save(registration)
    assert task_links.link(task_links.REPORT, run) == ""  # registered, but no report written: nothing to link
    run.layout.report.write_text("<html></html>")
    assert task_links.link(task_links.MODEL_VERSION, run) == "http://ui:5000/#/models/flight%20delay/versions/4"
    assert task_links.link(task_links.REPORT, run) == (
        f"http://ui:5000/#/experiments/7/runs/abc/artifacts/{task_links.REPORT_ARTIFACT}")  # fmt: skip

    monkeypatch.delenv("RETRAINER_MLFLOW_UI_URL")  # an embedded store and no UI named: the report's own file
    assert task_links.link(task_links.REPORT, run) == run.layout.report.as_uri()
    assert task_links.link(task_links.MLFLOW_RUN, run) == ""


@pytest.mark.parametrize("task_id", sorted(task_links.TASK_LINKS))
def test_every_link_a_task_shows_has_a_resolver(task_id: str) -> None:
    assert set(task_links.TASK_LINKS[task_id]) <= set(task_links.RESOLVERS)
