"""End to end: the real DAG under ``dag.test()`` on a 7-day window, twice, then on corrupted input."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pendulum
import pytest

from conftest import ROOT, RUN_DATE
from retrainer import registry
from retrainer.layout import RunLayout, raw_partition

pytestmark = pytest.mark.e2e
CONF = {"window_days": 7, "eval_days": 2, "epochs": 1, "batch_size": 256}
MODEL = "flight_delay"


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags")).dags["flight_delay_retrain"]


@pytest.fixture(scope="module")
def e2e_env(tmp_path_factory, landed: Path) -> dict[str, str]:
    base = tmp_path_factory.mktemp("e2e")
    root = base / "data"
    root.mkdir()
    (root / "raw").symlink_to(landed / "raw")
    return {"RETRAINER_DATA_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}"}


def _run(dag, monkeypatch, env: dict[str, str]) -> dict[str, str]:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    dr = dag.test(logical_date=pendulum.datetime(RUN_DATE.year, RUN_DATE.month, RUN_DATE.day, tz="UTC"), run_conf=CONF)
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _versions(tracking: str) -> list[str]:
    client = registry.configure(tracking)
    return sorted((str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")), key=int)


@pytest.fixture(scope="module")
def first_run(dag, e2e_env):
    mp = pytest.MonkeyPatch()
    try:
        return _run(dag, mp, e2e_env)
    finally:
        mp.undo()


def test_every_task_succeeds_and_a_champion_is_registered(first_run: dict, e2e_env: dict) -> None:
    assert first_run == dict.fromkeys(first_run, "success")
    assert len(first_run) == 7
    tracking = e2e_env["MLFLOW_TRACKING_URI"]
    aliases = registry.aliases(tracking, MODEL)
    assert aliases["champion"] == aliases["challenger"] == _versions(tracking)[-1]


def test_the_savedmodel_of_the_run_loads_and_predicts(first_run: dict, e2e_env: dict) -> None:
    import pyarrow.dataset as ds
    import tensorflow as tf

    from retrainer.serving.pyfunc_model import to_signature_inputs

    layout = RunLayout.for_run(e2e_env["RETRAINER_DATA_ROOT"], "flight_delay", RUN_DATE)
    serve = tf.saved_model.load(str(layout.saved_model / "model")).signatures["serving_default"]
    frame = ds.dataset(str(layout.features / "eval")).to_table().to_pandas().head(50)
    p = next(iter(serve(**to_signature_inputs(frame, serve.structured_input_signature[1])).values())).numpy()
    assert p.shape == (50, 1) and np.all((p > 0) & (p < 1))


def test_rerunning_the_same_date_replaces_outputs_and_registers_nothing_new(
    first_run: dict, dag, e2e_env: dict, monkeypatch
) -> None:
    tracking = e2e_env["MLFLOW_TRACKING_URI"]
    layout = RunLayout.for_run(e2e_env["RETRAINER_DATA_ROOT"], "flight_delay", RUN_DATE)
    before_versions = _versions(tracking)
    before_parts = sorted(p.name for p in (layout.features / "train").glob("*.parquet"))
    states = _run(dag, monkeypatch, e2e_env)
    assert set(states.values()) == {"success"}
    assert _versions(tracking) == before_versions
    after_parts = sorted(p.name for p in (layout.features / "train").glob("*.parquet"))
    assert len(after_parts) == len(before_parts)
    assert sorted(p.name for p in layout.root.iterdir()) == sorted(
        ["features", "validation", "checkpoints", "training.json", "evaluation.json", "saved_model", "export.json",
         "registration.json"]
    )  # fmt: skip


def test_a_corrupted_day_stops_the_run_at_validation_and_keeps_the_champion(
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
    assert states["features"] == "success"
    assert states["validate"] == "failed"
    for task in ("train", "evaluate", "export", "register"):
        assert states[task] == "upstream_failed", task
    summary = (RunLayout.for_run(root, "flight_delay", RUN_DATE).validation / "summary.json").read_text()
    assert f"lack column 'dest' on {bad_day}" in summary
    assert registry.alias_version(tracking, MODEL, "champion") == champion_before
    assert _versions(tracking) == versions_before

    from retrainer.config import RunConfig
    from retrainer.summary import run_summary

    summary = run_summary(RunConfig(run_date=RUN_DATE, data_root=str(root), tracking_uri=tracking))
    assert "validation  FAILED" in summary and "stopped     at validation" in summary
    assert f"champion -> v{champion_before} (not changed by this run)" in summary
