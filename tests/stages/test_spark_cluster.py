"""The features job submitted through the Apache Spark provider to a real Spark standalone cluster (master
and worker started from the pip pyspark's own launcher on 127.0.0.1, free ports, stopped at the end)
gives exactly the features the in-process local[2] stage gives."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from retrainer.core.feature_files import FeatureFiles
from support import small_config


@pytest.fixture(scope="module")
def standalone_master(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(master URL, master web UI URL) of a one-worker standalone cluster."""
    from retrainer.devtools.spark_standalone import StandaloneCluster

    with StandaloneCluster.start(tmp_path_factory.mktemp("spark-standalone")) as cluster:
        yield cluster.master_url, cluster.ui_url


def rows_of(folder: Path) -> list[dict]:
    rows = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: [(v is None, str(v)) for v in r.values()])


def test_features_on_a_standalone_cluster_equal_local_mode(
    spark, standalone_master: tuple[str, str], landed: Path, tmp_path: Path, monkeypatch
) -> None:
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from retrainer.data import features_submission
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.features import build_features

    master_url, master_ui = standalone_master
    results = {}
    for mode in ("local", "cluster"):
        root = tmp_path / mode
        root.mkdir()
        (root / "raw").symlink_to(landed / "raw")
        cfg = small_config(root, f"sqlite:///{tmp_path / 'mlflow.db'}")
        gate = check_raw_days(cfg)
        if mode == "local":
            results[mode] = build_features(gate, cfg)
            continue
        monkeypatch.setenv("AIRFLOW_CONN_RETRAINER_SPARK_CLUSTER", master_url)
        settings = features_submission.submit_settings(cfg)
        features_submission.before_submit(cfg)
        hook = SparkSubmitHook(conn_id="retrainer_spark_cluster", **settings)
        hook.submit(features_submission.application())
        results[mode] = features_submission.result_of(cfg)
        with urllib.request.urlopen(f"{master_ui}/json/", timeout=5) as r:  # the cluster ran it
            assert settings["name"] in [app["name"] for app in json.load(r)["completedapps"]]

    local, cluster = results["local"], results["cluster"]
    assert cluster.rows == local.rows and cluster.rows["train"] > 0
    assert cluster.store_days_computed == local.store_days_computed  # separate data roots: both computed all
    for split in ("train", "eval"):
        got = rows_of(getattr(FeatureFiles(Path(cluster.folder)), split))
        want = rows_of(getattr(FeatureFiles(Path(local.folder)), split))
        assert got == want, split
    want, got = (json.loads(FeatureFiles(Path(r.folder)).stats.read_text()) for r in (local, cluster))
    assert got["vocabulary"] == want["vocabulary"] and got["rows"] == want["rows"]
    for column, moments in want["numeric"].items():  # sums over partitions: equal up to rounding order
        assert got["numeric"][column] == pytest.approx(moments, rel=1e-9), column


def test_a_data_error_in_the_submitted_job_is_bad_data_and_leaves_no_result(
    spark, landed: Path, tmp_path: Path
) -> None:
    """A landed file changed after the raw gate: the job fails, the task sees BadData (no retries) naming
    the file, and no features result is left for validate to read."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from retrainer.core.errors import BadData
    from retrainer.core.layout import RunLayout, raw_partition
    from retrainer.core.results import FeaturesResult
    from retrainer.data import features_submission
    from retrainer.stages.check_raw import check_raw_days

    root = tmp_path / "data"
    shutil.copytree(landed / "raw", root / "raw")
    cfg = small_config(root, f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_raw_days(cfg)
    changed = raw_partition(root, "flights", cfg.window.eval_start)
    changed.write_text(changed.read_text() + changed.read_text().splitlines(keepends=True)[-1])
    features_submission.before_submit(cfg)
    with pytest.raises(Exception) as submit_error:  # spark-submit's non-zero exit, as the provider reports it
        SparkSubmitHook(conn_id=features_submission.conn_id(), **features_submission.submit_settings(cfg)).submit(
            features_submission.application()
        )
    with pytest.raises(BadData, match=r"ChangedAfterGate .*flights/" + cfg.window.eval_start.isoformat()):
        features_submission.result_of(cfg, submit_error.value)
    assert RunLayout.of(cfg).load_optional(FeaturesResult) is None
