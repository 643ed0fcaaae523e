"""End to end: the real DAGs under ``dag.test()`` on a 7-day window: the flight-delay DAG twice and then
on corrupted input (stopped at the raw gate); the arrival-delay (regression) DAG, then a CLI run
against its own champion."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pendulum
import pytest

from retrainer import registry
from retrainer.core.feature_files import FeatureFiles
from retrainer.core.layout import RunLayout, raw_partition
from retrainer.core.results import EvaluationResult, ExportResult, RegistrationResult, TrainingResult
from support import ROOT, RUN_DATE

CONF = {"window_days": 7, "eval_days": 2, "epochs": 1, "batch_size": 256, "members": "joint"}
MODEL = "flight_delay"
MLFLOW_UI = "http://127.0.0.1:5999/"  # the tasks' links point there (no UI needs to run for them to be made)


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["flight_delay_retrain"]


@pytest.fixture(scope="module")
def e2e_env(tmp_path_factory, landed: Path, spark_connect_server: str) -> dict[str, str]:
    """The module's DAG runs (module fixtures, set up before any test's own): the warm Spark server first."""
    base = tmp_path_factory.mktemp("e2e")
    root = base / "data"
    root.mkdir()
    (root / "raw").symlink_to(landed / "raw")
    return {"RETRAINER_DATA_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
            "RETRAINER_MLFLOW_UI_URL": MLFLOW_UI}  # fmt: skip


def _run_tis(dag, monkeypatch, env: dict[str, str]) -> dict:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    logical = pendulum.datetime(RUN_DATE.year, RUN_DATE.month, RUN_DATE.day, tz="UTC")
    # run_after fixed: every call is the same DAG run id, as clearing a run reruns it (one run folder)
    dr = dag.test(logical_date=logical, run_after=logical, run_conf=CONF)
    return {ti.task_id: ti for ti in dr.get_task_instances()}


def _run(dag, monkeypatch, env: dict[str, str]) -> dict[str, str]:
    return {task_id: str(ti.state) for task_id, ti in _run_tis(dag, monkeypatch, env).items()}


def _versions(tracking: str, model: str = MODEL) -> list[str]:
    client = registry.configure(tracking)
    return sorted((str(v.version) for v in client.search_model_versions(f"name = '{model}'")), key=int)


@pytest.fixture(scope="module")
def first_run(dag, e2e_env):
    mp = pytest.MonkeyPatch()
    try:
        return _run(dag, mp, e2e_env)
    finally:
        mp.undo()


def test_every_task_succeeds_and_a_champion_is_registered(first_run: dict, e2e_env: dict) -> None:
    assert first_run == dict.fromkeys(first_run, "success")
    assert len(first_run) == 9
    tracking = e2e_env["MLFLOW_TRACKING_URI"]
    aliases = registry.aliases(tracking, MODEL)
    assert aliases["champion"] == aliases["challenger"] == _versions(tracking)[-1]


def test_the_new_champion_is_an_asset_event_with_its_metrics_and_an_alert(first_run: dict, e2e_env: dict) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from retrainer.runners import alerts

    version = registry.alias_version(e2e_env["MLFLOW_TRACKING_URI"], MODEL, "champion")
    with create_session() as session:
        events = [
            e.extra
            for e in session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            if e.asset.name == "flight_delay_champion"
        ]
    news = events[-1]
    assert news["version"] == version and news["model_uri"] == f"models:/{MODEL}/{version}"
    assert news["run_date"] == str(RUN_DATE) and news["headline"] == "auc" and 0.5 < news["metrics"]["auc"] <= 1
    changed = alerts.recorded(e2e_env["RETRAINER_DATA_ROOT"], alerts.CHAMPION_CHANGED)
    assert [a["details"]["version"] for a in changed] == [version]
    assert changed[0]["task_id"] == "publish_champion" and f"champion is now v{version}" in changed[0]["message"]
    assert alerts.recorded(e2e_env["RETRAINER_DATA_ROOT"], alerts.TASK_FAILED) == []


def _links(dag_id: str, task_id: str) -> dict[str, str]:
    """The extra links Airflow stored for the task (the XComs its UI and REST API read), by link name."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from retrainer.runners.task_links import TASK_LINKS
    from retrainer_plugins.task_links import RunLink

    keys = {RunLink(name, MODEL).xcom_key: name for name in TASK_LINKS[task_id]}
    with create_session() as session:
        rows = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.task_id == task_id,
                                                       XComModel.key.in_(keys))).all()  # fmt: skip
        return {keys[row.key]: XComModel.deserialize_value(row) for row in rows}


def test_each_task_links_its_mlflow_run_model_version_report_and_data_docs(first_run: dict, e2e_env: dict) -> None:
    """The links the tasks show in Airflow point at this run's own records: the MLflow run train streamed into and
    register completed, the version registered, the report as logged to that run, the gates' Data Docs."""
    from retrainer.runners.task_links import REPORT_ARTIFACT

    tracking, dag_id = e2e_env["MLFLOW_TRACKING_URI"], "flight_delay_retrain"
    layout = RunLayout.latest(e2e_env["RETRAINER_DATA_ROOT"], "flight_delay", RUN_DATE)
    registration = layout.load(RegistrationResult)
    ui, run_id = MLFLOW_UI.rstrip("/"), registration.mlflow_run_id
    experiment = registry.configure(tracking).get_run(run_id).info.experiment_id
    register = _links(dag_id, "register")
    assert register == {
        "MLflow run": f"{ui}/#/runs/{run_id}",
        "Model version": f"{ui}/#/models/{MODEL}/versions/{registration.version}",
        "Evidence report": f"{ui}/#/experiments/{experiment}/runs/{run_id}/artifacts/{REPORT_ARTIFACT}",
        "Data Docs": (layout.validation / "data_docs" / "index.html").as_uri(),
    }, register
    logged = [a.path for a in registry.configure(tracking).list_artifacts(run_id, "report")]
    assert logged == [REPORT_ARTIFACT]  # the report link's artifact exists
    assert _links(dag_id, "train") == {"MLflow run": register["MLflow run"]}  # one MLflow run: curves streamed there
    history = (Path(e2e_env["RETRAINER_DATA_ROOT"]) / "data_docs" / MODEL / "index.html").as_uri()
    assert _links(dag_id, "validate") == {"Data Docs": register["Data Docs"], "Gates' history": history}
    raw = _links(dag_id, "check_raw")
    assert raw["Gates' history"] == history
    for docs in (raw["Raw gate Data Docs"], register["Data Docs"], history):
        assert Path(unquote(urlparse(docs).path)).is_file(), docs
    page = Path(unquote(urlparse(history).path)).read_text()  # this run's two gates, linked to its own Data Docs
    assert page.count(f"<code>{layout.root.name}</code>") == 2 and page.count('<tr class="ok">') == 2


def test_the_savedmodel_of_the_run_loads_and_predicts(first_run: dict, e2e_env: dict) -> None:
    import pyarrow.dataset as ds
    import tensorflow as tf

    from retrainer.serving.signature_inputs import to_signature_inputs

    layout = RunLayout.latest(e2e_env["RETRAINER_DATA_ROOT"], "flight_delay", RUN_DATE)
    serve = tf.saved_model.load(layout.load(ExportResult).saved_model_uri).signatures["serving_default"]
    frame = ds.dataset(str(FeatureFiles(layout.features).eval)).to_table().to_pandas().head(50)
    p = next(iter(serve(**to_signature_inputs(frame, serve.structured_input_signature[1])).values())).numpy()
    assert p.shape == (50, 1) and np.all((p > 0) & (p < 1))


def test_rerunning_the_same_date_replaces_outputs_and_registers_nothing_new(
    first_run: dict, dag, e2e_env: dict, monkeypatch
) -> None:
    tracking = e2e_env["MLFLOW_TRACKING_URI"]
    layout = RunLayout.latest(e2e_env["RETRAINER_DATA_ROOT"], "flight_delay", RUN_DATE)
    before_versions = _versions(tracking)
    before_parts = sorted(p.name for p in FeatureFiles(layout.features).train.glob("*.parquet"))
    states = _run(dag, monkeypatch, e2e_env)
    assert states.pop("publish_champion") == "skipped"  # the champion did not change: no Asset event, no alert
    assert set(states.values()) == {"success"}
    assert _versions(tracking) == before_versions
    after_parts = sorted(p.name for p in FeatureFiles(layout.features).train.glob("*.parquet"))
    assert len(after_parts) == len(before_parts)
    assert sorted(p.name for p in layout.root.iterdir()) == sorted(
        ["raw_gate", "features", "validation", "checkpoints", "saved_model", "cost", "raw_gate.json", "features.json",
         "validation.json", "training.json", "evaluation.json", "baselines.json", "export.json", "registration.json",
         "promotion_intent.json", "plots", "report.html", "mlflow_run.json"]
    )  # fmt: skip
    stages = ["check_raw", "features", "validate", "train", "evaluate", "export", "register"]
    assert sorted(p.name for p in layout.costs.iterdir()) == sorted(f"{s}.json" for s in stages)  # one per stage


def test_the_runs_report_opens_in_a_browser_with_its_plots(first_run: dict, e2e_env: dict) -> None:
    """The evidence report of a DAG run, opened in headless Chromium as an operator would: every plot loads,
    the decision, the metrics beside the champion and the slice table are there; its screenshot is kept
    (``test-artifacts/run-report.png``; the one in the docs is from such a run)."""
    import os

    from playwright.sync_api import sync_playwright

    from support.server_mode import CHROMIUM, CHROMIUM_ARGS

    layout = RunLayout.latest(e2e_env["RETRAINER_DATA_ROOT"], "flight_delay", RUN_DATE)
    evaluation = layout.load(EvaluationResult)
    registration = layout.load(RegistrationResult)
    assert [Path(p).name for p in evaluation.plots] == ["roc.png", "precision_recall.png", "calibration.png",
                                                        "by_slice.png"]  # fmt: skip
    artifacts = Path(os.environ.get("RETRAINER_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(layout.report.as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            text = page.inner_text("body")
            page.screenshot(path=str(artifacts / "run-report.png"), full_page=True)
        finally:
            browser.close()
    assert len(widths) == len(evaluation.plots) and all(w > 300 for w in widths)
    assert f"flight_delay v{registration.version}" in text and registration.decision[:40] in text
    assert f"champion v{evaluation.champion_version}" in text  # the rerun was compared with the champion
    assert "origin=EWR" in text and "Held by the slice gate" not in text
    assert "raw gate Data Docs" in text and "MLflow run" in text and "p99 ms" in text


def test_a_corrupted_day_stops_the_run_at_the_raw_gate_and_keeps_the_champion(
    first_run: dict, dag, e2e_env: dict, tmp_path: Path, landed: Path, monkeypatch
) -> None:
    tracking = e2e_env["MLFLOW_TRACKING_URI"]
    champion_before = registry.alias_version(tracking, MODEL, "champion")
    versions_before = _versions(tracking)
    root = tmp_path / "data"
    shutil.copytree(landed / "raw", root / "raw")
    bad_day = RUN_DATE - dt.timedelta(days=1)
    path = raw_partition(root, "flights", bad_day)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    drop = rows[0].index("dest")
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([r[:drop] + r[drop + 1 :] for r in rows])

    states = _run(dag, monkeypatch, {**e2e_env, "RETRAINER_DATA_ROOT": str(root)})
    assert states["check_raw"] == "failed"
    for task in ("features", "validate", "train", "evaluate", "export", "register", "publish_champion"):
        assert states[task] == "upstream_failed", task
    from retrainer.runners import alerts

    (failed,) = alerts.recorded(root, alerts.TASK_FAILED)  # one alert, from the task that failed
    assert failed["task_id"] == "check_raw" and failed["run_date"] == str(RUN_DATE)
    assert "RawDataRejected" in failed["message"] and "dest" in failed["details"]["exception"]
    assert alerts.recorded(root, alerts.CHAMPION_CHANGED) == []
    from retrainer.core import atomic
    from retrainer.core.layout import ValidationFiles
    from retrainer.core.results import GateReport

    layout = RunLayout.latest(root, "flight_delay", RUN_DATE)
    report = GateReport.from_dict(atomic.read_json(ValidationFiles(layout.raw_gate).report))
    assert any(f"missing required columns outside [0, 0] on {bad_day}: 1" in line for line in report.failed)
    assert any("lacks ['dest']" in line for line in report.failed)
    assert registry.alias_version(tracking, MODEL, "champion") == champion_before
    assert _versions(tracking) == versions_before
    # the failed task still links its Data Docs: where an operator sees what failed
    links = _links("flight_delay_retrain", "check_raw")
    assert links["Raw gate Data Docs"] == report.data_docs_uri
    assert Path(unquote(urlparse(report.data_docs_uri).path)).is_file()
    history = Path(unquote(urlparse(links["Gates' history"]).path)).read_text()  # the failure is on the history
    assert "FAILED" in history and "lacks [&#x27;dest&#x27;]" in history, history[-2000:]

    from retrainer.core.config import RunConfig
    from retrainer.runners.run_summary import run_summary

    cfg = RunConfig.build(RUN_DATE, data_root=str(root), tracking_uri=tracking)
    summary = run_summary(cfg, RunLayout.latest(root, "flight_delay", RUN_DATE))  # the DAG run's folder
    assert "raw gate    FAILED" in summary and "stopped     at the raw gate" in summary
    assert f"champion -> v{champion_before} (not changed by this run)" in summary


def test_bad_data_fails_its_task_at_once_without_retrying(
    first_run: dict, dag, e2e_env: dict, tmp_path: Path, landed: Path, monkeypatch
) -> None:
    tracking = e2e_env["MLFLOW_TRACKING_URI"]
    champion_before = registry.alias_version(tracking, MODEL, "champion")
    root = tmp_path / "data"
    shutil.copytree(landed / "raw", root / "raw")
    path = raw_partition(root, "flights", RUN_DATE - dt.timedelta(days=3))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0].replace("dest", "origin") + "".join(lines[1:]))  # two columns named origin

    tis = _run_tis(dag, monkeypatch, {**e2e_env, "RETRAINER_DATA_ROOT": str(root)})
    gate = tis["check_raw"]
    assert str(gate.state) == "failed" and gate.try_number == 1  # retries=2, none used
    assert str(tis["features"].state) == "upstream_failed" and str(tis["register"].state) == "upstream_failed"
    assert registry.alias_version(tracking, MODEL, "champion") == champion_before


REGRESSION = "arrival_delay_minutes"


@pytest.fixture(scope="module")
def regression_run(dagbag, e2e_env):
    """The second workload's own DAG, on the same landed data and the same MLflow store; its train task
    (the operator) runs two worker processes under MultiWorkerMirroredStrategy, as the deployment says."""
    mp = pytest.MonkeyPatch()
    try:
        workers = {"RETRAINER_LAUNCHER": "local_processes", "RETRAINER_NUM_WORKERS": "2"}
        return _run(dagbag.dags[f"{REGRESSION}_retrain"], mp, e2e_env | workers)
    finally:
        mp.undo()


def test_the_regression_dag_trains_evaluates_and_registers_its_own_model(regression_run: dict, e2e_env) -> None:
    assert regression_run == dict.fromkeys(regression_run, "success") and len(regression_run) == 9
    tracking = e2e_env["MLFLOW_TRACKING_URI"]
    layout = RunLayout.latest(e2e_env["RETRAINER_DATA_ROOT"], REGRESSION, RUN_DATE)
    evaluation = layout.load(EvaluationResult)
    assert (evaluation.headline, evaluation.higher_is_better) == ("rmse", False)
    assert 5 < evaluation.new["rmse"] < 200 and evaluation.new["mae"] <= evaluation.new["rmse"]
    training = layout.load(TrainingResult)
    assert training.train_metric == "train_rmse"
    assert (training.launcher, training.num_workers, training.strategy) == (
        "local_processes", 2, "CollectiveAllReduceStrategy",
    )  # fmt: skip
    registration = layout.load(RegistrationResult)
    assert registration.registered_model == REGRESSION and registration.promoted
    assert registry.aliases(tracking, REGRESSION) == {
        "champion": registration.version,
        "challenger": registration.version,
    }
    assert registry.alias_version(tracking, MODEL, "champion") is not None  # the other workload's model is its own

    import pyarrow.dataset as ds
    import tensorflow as tf

    from retrainer.serving.signature_inputs import to_signature_inputs

    serve = tf.saved_model.load(layout.load(ExportResult).saved_model_uri).signatures["serving_default"]
    frame = ds.dataset(str(FeatureFiles(layout.features).eval)).to_table().to_pandas().head(200)
    minutes = next(iter(serve(**to_signature_inputs(frame, serve.structured_input_signature[1])).values())).numpy()
    assert minutes.shape == (200, 1) and -60 < float(minutes.mean()) < 120  # minutes, not a probability


def test_the_cli_runs_the_regression_workload_against_its_own_champion(
    regression_run: dict, e2e_env: dict, capsys
) -> None:
    from retrainer.runners.cli import main

    tracking, root = e2e_env["MLFLOW_TRACKING_URI"], e2e_env["RETRAINER_DATA_ROOT"]
    champion = registry.alias_version(tracking, REGRESSION, "champion")
    flight_delay_versions = _versions(tracking)
    argv = ["run", "--workload", REGRESSION, "--date", RUN_DATE.isoformat(), "--data-root", root, "--tracking-uri",
            tracking, "--window-days", "7", "--eval-days", "2", "--epochs", "1", "--batch-size", "256",
            "--hidden-units", "12", "--min-gain", "1000"]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().out
    evaluation = RunLayout.latest(root, REGRESSION, RUN_DATE).load(EvaluationResult)
    assert evaluation.champion_version == champion and evaluation.champion is not None
    assert evaluation.promote is False
    assert "lower is better" in evaluation.reason and "< min_gain 1000" in evaluation.reason
    assert f"champion    v{champion}: RMSE" in summary and "decision    keep champion" in summary
    assert registry.alias_version(tracking, REGRESSION, "champion") == champion
    assert len(_versions(tracking, REGRESSION)) == 2
    assert _versions(tracking) == flight_delay_versions
