"""Two runs of one date at the same time: each in its own folder, each registers what it evaluated.

Before run folders, two ``retrainer run`` of one date with other ``eval_days`` overwrote each other's
features, validation and SavedModel: one failed validating a table the other was rewriting, the other on
``features.pending`` vanishing under it, and register could upload the other run's SavedModel.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrainer import registry
from retrainer.core.fingerprint import tree_digest
from retrainer.core.layout import RunLayout
from retrainer.core.results import EvaluationResult, ExportResult, RegistrationResult
from retrainer.stages.register import RUN_FOLDER_TAG
from support import RUN_DATE, SPARK_CONNECT_URL, prefork, run_root, small_config

MODEL = "flight_delay"


def test_two_runs_of_one_date_started_together_each_register_what_they_evaluated(
    spark, landed: Path, tmp_path: Path
) -> None:
    import mlflow

    # MLflow's first-use migration is done by run_root: two processes doing it at once collide (a server store,
    # as in server mode, has no first use); the runs race from the first stage on, not on that.
    root, tracking = run_root(tmp_path, landed)
    cfgs = {e: small_config(root, tracking, eval_days=e) for e in (2, 3)}
    procs = {}
    for e, cfg in cfgs.items():  # started together: the same stages of both overlap
        env = {**os.environ, **cfg.secret_env(), "RETRAINER_SPARK_MASTER": SPARK_CONNECT_URL}
        procs[e] = prefork.start("-m", "retrainer.runners.cli", ["run", *cfg.to_argv()], env, tmp_path / f"run-{e}.log")
    for proc in procs.values():
        assert proc.wait(timeout=600) == 0, proc.output[-4000:]

    layouts = {e: RunLayout.of(cfg) for e, cfg in cfgs.items()}
    assert sorted(RunLayout.runs_of(root, MODEL, RUN_DATE), key=lambda r: r.root) == sorted(
        layouts.values(), key=lambda r: r.root
    )  # two folders, one per run
    client = registry.configure(tracking)
    versions = set()
    for e, layout in layouts.items():
        evaluation, exported = layout.load(EvaluationResult), layout.load(ExportResult)
        registration = layout.load(RegistrationResult)
        assert evaluation.eval_range == (str(RUN_DATE.fromordinal(RUN_DATE.toordinal() - e)), str(RUN_DATE))
        tags = registry.version_tags(tracking, MODEL, registration.version)
        assert tags[RUN_FOLDER_TAG] == layout.root.relative_to(root).as_posix()
        assert tags["eval_range"] == f"[{evaluation.eval_range[0]}, {evaluation.eval_range[1]})"
        assert float(tags[f"new_{evaluation.headline}"]) == round(evaluation.new[evaluation.headline], 6)
        # the registered files are the SavedModel this run exported and checked, byte for byte
        assert client.get_model_version(MODEL, registration.version).run_id == registration.mlflow_run_id
        model_dir = mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}/{registration.version}", dst_path=str(tmp_path / f"dl-{e}"), tracking_uri=tracking
        )
        uploaded = tree_digest(Path(model_dir) / "artifacts" / Path(exported.saved_model_uri).name)
        assert uploaded == exported.saved_model_digest == tree_digest(exported.saved_model_uri)
        versions.add(registration.version)
    assert len(versions) == 2
