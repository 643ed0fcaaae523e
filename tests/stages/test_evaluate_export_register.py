"""Evaluation against the champion, SavedModel export, and MLflow registration with aliases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from retrainer import registry
from retrainer.core.atomic import read_json
from retrainer.core.results import ValidationResult
from retrainer.stages.evaluate import evaluate_models
from retrainer.stages.export import export_model
from retrainer.stages.register import register_model
from retrainer.stages.train import train_model
from support import RUN_DATE, small_config

MODEL = "flight_delay"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def cfg(chain_root: Path, tracking: str):
    return small_config(chain_root, tracking, epochs=2)


@pytest.fixture(scope="module")
def first(validated: ValidationResult, cfg) -> dict:
    """train -> evaluate -> export -> register with an empty registry."""
    training = train_model(validated, cfg)
    streamed = _curves_in_mlflow(cfg, training)  # before register: what the chief streamed while training
    evaluation = evaluate_models(validated, training, cfg)
    exported = export_model(validated, training, cfg)
    registration = register_model(validated, training, evaluation, exported, cfg)
    return {"training": training, "evaluation": evaluation, "export": exported, "registration": registration,
            "streamed": streamed}  # fmt: skip


def _curves_in_mlflow(cfg, training) -> dict:
    """The MLflow run the training streamed into (named in the run folder) and each curve's points in it."""
    from retrainer.core import atomic
    from retrainer.core.layout import RunLayout
    from retrainer.core.results import epoch_curves

    named = atomic.read_json(RunLayout.of(cfg).mlflow_run)
    client = registry.configure(cfg.engines.tracking_uri)
    keys = {k for row in training.history for k in epoch_curves(row)}
    points = {k: [(m.step, m.value) for m in client.get_metric_history(named["run_id"], k)] for k in keys}
    return {"run_id": named["run_id"], "points": points, "tags": client.get_run(named["run_id"]).data.tags}


def _eval_frame(validated: ValidationResult):
    return ds.dataset(str(validated.files.eval)).to_table().to_pandas()


def test_first_model_is_promoted_when_there_is_no_champion(first: dict, validated: ValidationResult) -> None:
    ev = first["evaluation"]
    assert ev.promote is True and ev.champion is None and ev.reason == "no champion yet"
    assert (ev.headline, ev.higher_is_better) == ("auc", True)
    assert ev.new["rows"] == validated.features.rows["eval"]
    reg = first["registration"]
    assert reg.promoted and reg.aliases == {"champion": reg.version, "challenger": reg.version}


def test_the_mlflow_model_page_has_plots_example_datasets_description_and_the_report(
    first: dict, validated: ValidationResult, cfg
) -> None:
    """What a reviewer sees in MLflow: the plots and the run's report on the run, an input example on the
    logged model, the two splits as datasets with their digests, the evaluation metrics on the logged model and
    a description of the version naming its data, its metrics and the decision."""
    import mlflow

    client = registry.configure(cfg.engines.tracking_uri)
    reg, ev = first["registration"], first["evaluation"]
    logged = {a.path for a in client.list_artifacts(reg.mlflow_run_id, "plots")}
    assert logged == {f"plots/{Path(p).name}" for p in ev.plots} and len(logged) == 4
    assert [a.path for a in client.list_artifacts(reg.mlflow_run_id, "report")] == ["report/report.html"]
    report = Path(client.download_artifacts(reg.mlflow_run_id, "report/report.html")).read_text()
    assert f"flight_delay v{reg.version}" in report and report.count("data:image/png;base64,") == 4
    version = client.get_model_version(MODEL, reg.version)
    assert "**Decision: promoted to champion**" in version.description
    assert f"evaluated on [{ev.eval_range[0]}, {ev.eval_range[1]})" in version.description
    model = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    linked = {m.key: m.value for m in model.metrics}
    assert linked["new_auc"] == pytest.approx(ev.new["auc"]) and "new_auc_ci_low" in linked
    assert not [k for k in linked if k.startswith(("champion_", "baseline_", "psi_"))], linked  # the run's only
    inputs = {d.dataset.name.split(" ")[0]: d.dataset for d in client.get_run(reg.mlflow_run_id).inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    assert inputs["training"].digest == validated.features.train_fingerprint[:32]
    assert len(inputs["evaluation"].digest) == 32
    import pandas as pd

    from retrainer.workloads import get_workload

    example = pd.read_json(_stored_model_folder(cfg, reg.version) / "input_example.json", orient="split")

    assert list(example.columns) == [c.name for c in get_workload(MODEL).contract.features] and len(example) == 5


def test_training_curves_reach_the_mlflow_run_during_training_and_register_completes_that_run(first: dict, cfg) -> None:
    """The chief streams every epoch of every member into the training run's MLflow run before ``train`` returns
    (read here before evaluate and register ran); register logs the rest into that same run and does not log the
    curves a second time."""
    from retrainer.core.results import EPOCHS_STREAMED_TAG, epoch_curves

    training, streamed, reg = first["training"], first["streamed"], first["registration"]
    expected: dict[str, list] = {}
    for row in training.history:
        for key, value in epoch_curves(row).items():
            expected.setdefault(key, []).append((row["epoch"], round(value, 5)))
    got = {k: sorted((step, round(value, 5)) for step, value in v) for k, v in streamed["points"].items()}
    assert expected and got == {k: sorted(v) for k, v in expected.items()}
    assert streamed["tags"][EPOCHS_STREAMED_TAG] == "true"
    assert reg.mlflow_run_id == streamed["run_id"]  # one MLflow run for the training run
    client = registry.configure(cfg.engines.tracking_uri)
    for key, points in expected.items():
        assert len(client.get_metric_history(reg.mlflow_run_id, key)) == len(points), key  # not logged twice
    run = client.get_run(reg.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["new_auc"] == pytest.approx(first["evaluation"].new["auc"])


def test_an_epoch_stream_that_cannot_reach_its_run_stops_quietly_and_leaves_the_curves_to_register(
    tmp_path: Path,
) -> None:
    from retrainer.training.epoch_stream import EpochStream

    stream = EpochStream(f"sqlite:///{tmp_path / 'mlflow.db'}", "no-such-run", flush_seconds=0)
    stream([{"member": "joint", "phase": "final", "epoch": 1, "loss": 0.5, "train_auc": 0.7}])
    stream.close()
    assert stream.broken and stream.sent == 0


def test_metrics_agree_with_an_independent_computation(first: dict, validated: ValidationResult, cfg) -> None:
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

    frame = _eval_frame(validated)
    import mlflow

    registry.configure(cfg.engines.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{first['registration'].version}")  # as a server loads it
    p = model.predict(frame)
    y = frame["is_late"].to_numpy()
    new = first["evaluation"].new
    assert new["auc"] == pytest.approx(roc_auc_score(y, p), abs=2e-3)
    assert new["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-3)
    assert new["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-3)
    assert new["accuracy"] == pytest.approx(accuracy_score(y, p > 0.5), abs=1e-3)


def test_the_registered_model_loads_where_retrainer_is_not_installed(
    first: dict, validated: ValidationResult, tracking: str, tmp_path: Path
) -> None:
    """A serving host has MLflow and TensorFlow, not retrainer: the pyfunc's one helper travels as its code path."""
    import subprocess
    import sys

    sample = tmp_path / "rows.parquet"
    _eval_frame(validated).head(20).to_parquet(sample)
    script = (
        "import sys; sys.modules['retrainer'] = None\n"  # any import of retrainer now fails
        "import json, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({tracking!r})\n"
        f"model = mlflow.pyfunc.load_model('models:/{MODEL}/{first['registration'].version}')\n"
        f"print(json.dumps(model.predict(pd.read_parquet({str(sample)!r})).tolist()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    served = np.asarray(json.loads(done.stdout.strip().splitlines()[-1]))
    from retrainer.serving.saved_model import SavedModelScorer

    expected = SavedModelScorer(first["export"].saved_model_uri).predict(_eval_frame(validated).head(20))
    assert served.shape == (20,) and np.allclose(served, expected, atol=1e-6)


def test_exported_savedmodel_serves_raw_features_in_a_fresh_load(first: dict, validated: ValidationResult) -> None:
    import tensorflow as tf

    from retrainer.serving.signature_inputs import to_signature_inputs

    exp = first["export"]
    assert exp.verified_rows == 100 and exp.max_abs_diff <= 1e-5
    loaded = tf.saved_model.load(exp.saved_model_uri)
    serve = loaded.signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == set(exp.serving_inputs)
    frame = _eval_frame(validated).head(5)
    out = next(iter(serve(**to_signature_inputs(frame, serve.structured_input_signature[1])).values())).numpy()
    assert out.shape == (5, 1) and np.all((out > 0) & (out < 1))


def test_export_keeps_a_tflite_network_that_predicts_what_the_savedmodel_predicts(first: dict, cfg) -> None:
    """Checked again here, independently of export, as a device would use it: the raw verification rows encoded
    with nothing but ``model.tflite.inputs.json`` (numpy, no TensorFlow preprocessing), run through TensorFlow's
    TF Lite interpreter, give the SavedModel's predictions on the raw rows; the file is on the MLflow run."""
    import json
    import warnings

    import pyarrow.parquet as pq
    import tensorflow as tf

    from retrainer.core.layout import ExportFiles
    from retrainer.serving.signature_inputs import to_signature_inputs

    exp, reg = first["export"], first["registration"]
    assert exp.tflite_uri and exp.tflite_note == "" and exp.tflite_bytes == Path(exp.tflite_uri).stat().st_size
    files = ExportFiles(Path(exp.saved_model_uri).parent)
    assert sorted(p.name for p in files.folder.iterdir()) == [
        "model",
        "model.tflite",
        "model.tflite.inputs.json",
        "verification_sample.parquet",
    ]  # no scratch left
    frame = pq.read_table(files.verification_sample).to_pandas()
    serve = tf.saved_model.load(exp.saved_model_uri).signatures["serving_default"]
    saved = next(iter(serve(**to_signature_inputs(frame, serve.structured_input_signature[1])).values()))
    recipe = json.loads(files.tflite_inputs.read_text())
    encoded = {}
    for name, n in recipe["numeric"].items():
        x = frame[name].to_numpy(dtype="float64")
        x = np.where(np.isnan(x), n["mean"], x)
        encoded[name] = ((x - n["mean"]) / np.sqrt(n["variance"])).astype("float32").reshape(-1, 1)
    for name, c in recipe["categorical"].items():
        index = {str(v): i + 1 for i, v in enumerate(c["vocabulary"])}
        encoded[name] = np.array([index.get(str(v), 0) for v in frame[name]], dtype="int64").reshape(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_path=exp.tflite_uri).get_signature_runner("serving_default")
    lite = next(iter(runner(**encoded).values())).reshape(-1)
    saved = saved.numpy().reshape(-1)
    assert len(saved) == 100 and np.allclose(lite, saved, atol=1e-5), float(np.max(np.abs(lite - saved)))
    assert exp.tflite_max_abs_diff is not None and exp.tflite_max_abs_diff <= 1e-5
    client = registry.configure(cfg.engines.tracking_uri)
    assert [a.path for a in client.list_artifacts(reg.mlflow_run_id, "tflite")] == [
        "tflite/model.tflite", "tflite/model.tflite.inputs.json"]  # fmt: skip


def test_an_export_that_serves_other_predictions_is_refused_and_the_saved_model_kept(
    first: dict, validated: ValidationResult, cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fresh process's predictions are compared, not trusted: a model whose served predictions differ
    from the in-memory ones by 0.01 is refused, and the run's SavedModel stays the one that passed."""
    from retrainer.core.fingerprint import file_digest
    from retrainer.stages.export import ExportMismatch, _export_and_check, _FreshProcess
    from retrainer.training.loop import load_trained_model
    from retrainer.workloads import RunContext

    run = RunContext.of(cfg)
    model = load_trained_model(validated, first["training"], run.workload)

    class Shifted:  # predicts 0.01 more in memory than the SavedModel it exports serves
        def __call__(self, *args, **kwargs):
            return model(*args, **kwargs) + 0.01

    from retrainer.serving.saved_model import write_saved_model

    monkeypatch.setattr("retrainer.stages.export.write_saved_model", lambda _, folder: write_saved_model(model, folder))

    saved = Path(first["export"].saved_model_uri) / "saved_model.pb"
    before = file_digest(saved)
    with _FreshProcess() as checker, pytest.raises(ExportMismatch, match=r"disagrees .* max \|diff\| = 0\.01"):
        _export_and_check(Shifted(), validated, run, checker)
    assert file_digest(saved) == before


def test_a_savedmodel_slower_than_the_serving_budget_fails_export_and_the_kept_one_stays(
    first: dict, validated: ValidationResult, cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export records the SavedModel's size and p50/p99 at batch 1 and 256 from the fresh process; a p99
    budget set below what was measured fails the task, naming the budget, and the run's SavedModel is kept."""
    from retrainer.core.fingerprint import tree_digest
    from retrainer.stages.export import ServingBudgetExceeded

    exp = first["export"]
    assert set(exp.latency_ms) == {"1", "256"} and exp.saved_model_bytes > 0
    for timing in exp.latency_ms.values():
        assert 0 < timing["p50"] <= timing["p99"] and timing["calls"] == 100
    assert exp.latency_ms["1"]["p50"] < exp.latency_ms["256"]["p99"]  # 256 rows cost more than one
    before = tree_digest(exp.saved_model_uri)
    monkeypatch.setenv("RETRAINER_SERVING_P99_MS_BATCH1", "0.001")  # below any p99 this machine can measure
    with pytest.raises(ServingBudgetExceeded, match=r"p99_ms@1 \d+\.\d+ > 0\.001 \(RETRAINER_SERVING_P99_MS_BATCH1\)"):
        export_model(validated, first["training"], cfg)
    assert tree_digest(exp.saved_model_uri) == before
    monkeypatch.setenv("RETRAINER_SERVING_P99_MS_BATCH1", "0")  # 0: not checked
    monkeypatch.setenv("RETRAINER_SAVED_MODEL_MAX_MB", "0.01")
    with pytest.raises(ServingBudgetExceeded, match=r"size_mib \d+\.\d+ > 0\.01 \(RETRAINER_SAVED_MODEL_MAX_MB\)"):
        export_model(validated, first["training"], cfg)


def test_a_tflite_conversion_handed_first_reports_apart_from_the_savedmodel_check(first: dict, tmp_path: Path) -> None:
    """Export hands the fresh process the TF Lite conversion before the SavedModel exists (it converts while
    export writes the SavedModel): a conversion that fails comes back as an error beside the SavedModel's own
    predictions and latency, which are checked as before (the real conversion's agreement: the test above)."""
    from retrainer.core.layout import ExportFiles
    from retrainer.stages.export import _FreshProcess

    files = ExportFiles(Path(first["export"].saved_model_uri).parent)
    missing = {"network": str(tmp_path / "no-network"), "encoded": str(tmp_path / "no.npz"), "out": str(tmp_path / "x")}
    with _FreshProcess() as checker:
        checker.convert(missing)
        reply = checker.predict(files.model, files.verification_sample)
    assert reply["tflite"]["error"] and not (tmp_path / "x").exists(), reply["tflite"]
    assert len(reply["predictions"]) == 100 and set(reply["latency_ms"]) == {"1", "256"}


def test_the_fresh_process_names_a_model_it_cannot_load_and_stops_when_export_fails(tmp_path: Path) -> None:
    from retrainer.stages.export import ExportMismatch, _FreshProcess

    with _FreshProcess() as checker, pytest.raises(ExportMismatch, match="failed to load or predict"):
        checker.predict(tmp_path / "no-model", tmp_path / "no-sample.parquet")
    with pytest.raises(RuntimeError, match="before the model existed"), _FreshProcess() as checker:
        child = checker.proc
        raise RuntimeError("export failed before the model existed")
    assert child.poll() is not None  # stopped, not left waiting for a path


def test_the_registered_version_carries_what_each_stage_cost(first: dict, cfg) -> None:
    import json

    tags = registry.version_tags(cfg.engines.tracking_uri, MODEL, first["registration"].version)
    cost = json.loads(tags["retrainer.cost"])
    assert set(cost) == {"check_raw", "features", "validate", "train", "evaluate", "export"}
    assert all(c["wall_s"] > 0 and c["cpu_s"] >= 0 and c["peak_rss_mib"] > 50 for c in cost.values())
    assert cost["train"]["cpu_s"] > 0.5  # TensorFlow trained in this process: its CPU is the stage's


def test_champion_alias_serves_the_savedmodel_through_mlflow(first: dict, validated: ValidationResult, cfg) -> None:
    import mlflow

    registry.configure(cfg.engines.tracking_uri)
    frame = _eval_frame(validated).head(20)
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    p = champion.predict(frame)
    assert p.shape == (20,) and np.all((p > 0) & (p < 1))
    run = mlflow.MlflowClient().get_run(first["registration"].mlflow_run_id)
    tags = run.data.tags
    assert tags["train_fingerprint"] == validated.features.train_fingerprint
    assert tags["run_date"] == RUN_DATE.isoformat() and tags["objective"] == "binary_classification"
    assert {"dag_id", "run_id", "run_window", "git_commit"} <= set(tags)
    from retrainer.workloads.flight_delay import WORKLOAD

    per_member = {
        f"{m.name}_{k}"
        for m in WORKLOAD.model.select(cfg.tuning.members).members
        for k in ("train_loss", "train_auc", "val_auc")
    }
    assert per_member | {"new_auc", "baseline_logistic_regression_auc"} <= set(run.data.metrics)
    # every epoch of every member is a point of its curve (logged in one batch), in the order it trained
    training = first["training"]
    for member in {h["member"] for h in training.history}:
        rows = [h for h in training.history if h["member"] == member]
        curve = mlflow.MlflowClient().get_metric_history(run.info.run_id, f"{member}_train_loss")
        points = [(p.step, p.value) for p in sorted(curve, key=lambda p: p.timestamp)]
        assert points == [(h["epoch"], pytest.approx(h["loss"])) for h in rows]
    assert run.data.params["epochs_trained"] == str(training.epochs_trained)
    assert run.data.tags["validation.checks_could_fail"] == str(validated.report.could_fail)


def test_registering_the_same_training_run_again_reuses_its_version(first: dict, validated, cfg) -> None:
    again = register_model(validated, first["training"], first["evaluation"], first["export"], cfg)
    assert again.reused_existing_version and again.version == first["registration"].version


def test_a_retry_after_a_crash_before_tagging_the_version_reuses_it(first: dict, validated, cfg) -> None:
    from retrainer.stages.register import RUN_KEY_TAG

    version = first["registration"].version
    client = registry.configure(cfg.engines.tracking_uri)
    client.delete_model_version_tag(MODEL, version, RUN_KEY_TAG)  # as if the task died right after log_model
    again = register_model(validated, first["training"], first["evaluation"], first["export"], cfg)
    assert again.reused_existing_version and again.version == version


def test_register_refuses_an_evaluation_or_a_savedmodel_that_is_not_this_runs(
    first: dict, validated, cfg, tmp_path: Path
) -> None:
    """The promoted artefact is the evaluated one: another training run's evaluation, a SavedModel outside
    the run's folder, or one whose files changed since export is refused before anything is registered."""
    import dataclasses
    import shutil

    from retrainer.stages.register import ForeignArtefact

    training, evaluation, exported = first["training"], first["evaluation"], first["export"]
    assert evaluation.run_key == exported.run_key == training.run_key and len(exported.saved_model_digest) == 64
    versions = registry.configure(cfg.engines.tracking_uri).search_model_versions(f"name = '{MODEL}'")
    elsewhere = tmp_path / "model"
    shutil.copytree(exported.saved_model_uri, elsewhere)  # the same bytes, but not in this run's folder
    cases = {
        "the evaluation scored training run other": (dataclasses.replace(evaluation, run_key="other" * 8), exported),
        "the export is of training run other": (evaluation, dataclasses.replace(exported, run_key="other" * 8)),
        "is outside the run folder": (evaluation, dataclasses.replace(exported, saved_model_uri=str(elsewhere))),
        "is not the one export checked": (evaluation, dataclasses.replace(exported, saved_model_digest="0" * 64)),
    }
    for message, (ev, ex) in cases.items():
        with pytest.raises(ForeignArtefact, match=message):
            register_model(validated, training, ev, ex, cfg)
    after = registry.configure(cfg.engines.tracking_uri).search_model_versions(f"name = '{MODEL}'")
    assert len(after) == len(versions)  # nothing registered


def test_a_retry_after_the_alias_moved_still_announces_the_change_once(first: dict, validated, cfg) -> None:
    """register records its intent before moving ``champion``; an attempt that died after the move (no
    registration.json, no Asset event) is retried, and the retry reports the change (so publish_champion
    announces it) until the change is marked published; after that a rerun reports no change."""
    from retrainer.core.layout import RunLayout
    from retrainer.registry.promotion import mark_published

    layout = RunLayout.of(cfg)
    intent = read_json(layout.promotion_intent)
    version = first["registration"].version
    assert intent == {"version": version, "champion_before": None, "decision": first["registration"].decision}
    args = (validated, first["training"], first["evaluation"], first["export"], cfg)
    retry = register_model(*args)  # as if the first attempt died right after moving the alias
    assert retry.champion_changed and retry.champion_before is None and retry.version == version
    assert "(the alias was moved by an earlier attempt)" in retry.decision
    mark_published(layout.promotion_intent, version)  # publish_champion's last step
    again = register_model(*args)
    assert not again.champion_changed and again.decision.startswith("already champion")


def test_a_model_that_misses_the_gate_becomes_challenger_not_champion(
    first: dict, validated: ValidationResult, cfg
) -> None:
    strict = cfg.replace(hidden_units=12, min_gain=0.5)  # new run key: a different model
    training = train_model(validated, strict)
    evaluation = evaluate_models(validated, training, strict)
    assert evaluation.champion_version == first["registration"].version
    assert evaluation.champion["auc"] == pytest.approx(first["evaluation"].new["auc"], abs=1e-6)
    assert evaluation.promote is False and "< min_gain 0.5" in evaluation.reason
    assert evaluation.gain == pytest.approx(evaluation.new["auc"] - evaluation.champion["auc"], abs=1e-6)
    exported = export_model(validated, training, strict)
    reg = register_model(validated, training, evaluation, exported, strict)
    assert reg.version != first["registration"].version and not reg.promoted
    assert reg.aliases == {"champion": first["registration"].version, "challenger": reg.version}


def test_a_challenger_worse_on_one_airport_is_held_by_the_slice_gate_which_the_decision_names(
    first: dict, validated: ValidationResult, cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overall rule let through (min_gain -1, the floor lowered to match), the champion's own model with
    its ranking inverted at EWR only is held, and the decision, the saved result and the summary name the slice;
    the same model uncorrupted passes, so the slice gate is what held it."""
    from retrainer.core.results import EvaluationResult
    from retrainer.runners.run_summary import run_summary
    from retrainer.training import loop
    from retrainer.workloads import RunContext

    monkeypatch.setenv("RETRAINER_MIN_GAIN_FLOOR", "-1")
    monkeypatch.setenv("RETRAINER_MAX_SLICE_DROP", "0.05")  # the default, whatever the environment says
    lenient = cfg.replace(min_gain=-1.0)
    clean = evaluate_models(validated, first["training"], lenient)  # against itself as champion
    assert clean.promote is True and clean.held_by_slices == [] and clean.slices["overall"]["gain"] == 0.0
    origins = {s["value"] for s in clean.slices["slices"] if s["slice"] == "origin" and s["gated"]}
    assert origins == {"EWR", "JFK", "LGA"}  # each airport has enough evaluation rows to be gated

    import tensorflow as tf

    real = loop.load_trained_model

    def worse_at_ewr(*args):
        model = real(*args)

        class Inverted:  # the deliberately worse challenger: 1 - p for flights from EWR
            def __call__(self, inputs, training=False):
                p = model(inputs, training=training).numpy()
                ewr = inputs["origin"].reshape(-1) == "EWR"
                p[ewr] = 1.0 - p[ewr]
                return tf.constant(p)

        return Inverted()

    monkeypatch.setattr(loop, "load_trained_model", worse_at_ewr)
    held = evaluate_models(validated, first["training"], lenient)
    assert held.promote is False
    assert held.gain is not None and held.gain >= -1.0  # the overall rule alone would have promoted it
    assert any(line.startswith("origin=EWR (") for line in held.held_by_slices)
    assert "held by" in held.reason and "origin=EWR (" in held.reason and "> max_slice_drop 5.0%" in held.reason
    saved = RunContext.of(lenient).layout.load(EvaluationResult)
    assert saved.held_by_slices == held.held_by_slices  # the decision record on disk
    summary = run_summary(lenient)
    assert "largest drop origin=EWR" in summary and "holds the run" in summary
    from retrainer.evaluation.report import render

    page = render(RunContext.of(lenient).layout, MODEL, str(lenient.run.date), lenient.run.run_id, MODEL)
    assert "Held by the slice gate:" in page and "<li>origin=EWR (" in page  # the report says which rule held it
    assert '<tr class="holds"><td>origin=EWR</td>' in page


def _stored_model_folder(cfg, version: str) -> Path:
    """The version's logged model folder in the (local) artefact store."""
    import mlflow

    client = registry.configure(cfg.engines.tracking_uri)
    model_id = client.get_model_version(MODEL, version).source.removeprefix("models:/")  # the logged model
    return Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))


def test_the_champion_is_scored_from_its_checked_savedmodel_and_no_stored_code_runs(
    first: dict, validated: ValidationResult, cfg, tmp_path: Path
) -> None:
    """Evaluation never runs the champion's pyfunc code from the artefact store: replaced by code that would
    leave a mark, the champion still scores the same (from its SavedModel), and no mark is left."""
    version = first["registration"].version
    code = _stored_model_folder(cfg, version) / "pyfunc_model.py"
    original, mark = code.read_text(), tmp_path / "stored-code-ran"
    code.write_text(f"open({str(mark)!r}, 'w').close()\n" + original)
    try:
        again = evaluate_models(validated, first["training"], cfg)  # this run, against itself as champion
    finally:
        code.write_text(original)
    assert not mark.exists()
    assert again.champion_version == version
    assert again.champion["auc"] == pytest.approx(first["evaluation"].new["auc"], abs=1e-6)
    assert again.champion["rows"] == first["evaluation"].new["rows"]


def test_a_champion_whose_stored_files_changed_is_refused_and_one_without_a_digest_is_held(
    first: dict, validated: ValidationResult, cfg
) -> None:
    from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG, UnverifiedArtefact

    version = first["registration"].version
    weights = next((_stored_model_folder(cfg, version) / "artifacts").rglob("variables.data-*"))
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of one weight
    try:
        with pytest.raises(UnverifiedArtefact, match=rf"{MODEL} v{version}: the SavedModel .* changed after"):
            evaluate_models(validated, first["training"], cfg)
    finally:
        weights.write_bytes(original)

    client = registry.configure(cfg.engines.tracking_uri)
    digest = registry.version_tags(cfg.engines.tracking_uri, MODEL, version)[SAVED_MODEL_DIGEST_TAG]
    assert digest == first["export"].saved_model_digest  # what register recorded is what export checked
    client.delete_model_version_tag(MODEL, version, SAVED_MODEL_DIGEST_TAG)
    try:
        held = evaluate_models(validated, first["training"], cfg)
    finally:
        client.set_model_version_tag(MODEL, version, SAVED_MODEL_DIGEST_TAG, digest)
    assert held.promote is False and held.champion is None
    assert f"held: {MODEL} v{version} carries no {SAVED_MODEL_DIGEST_TAG} tag" in held.reason


def test_a_champion_that_moved_after_evaluation_is_re_evaluated_against(first: dict, validated, cfg) -> None:
    import dataclasses

    before = registry.alias_version(cfg.engines.tracking_uri, MODEL, "champion")
    strict = cfg.replace(hidden_units=10, min_gain=0.5)  # the re-evaluation against the champion cannot pass this
    training = train_model(validated, strict)
    stale = dataclasses.replace(evaluate_models(validated, training, strict), promote=True, champion_version="999")
    reg = register_model(validated, training, stale, export_model(validated, training, strict), strict)
    assert reg.promoted is False
    assert f"champion moved from v999 to v{before} after this run was evaluated; re-evaluated" in reg.decision
    assert "< min_gain 0.5" in reg.decision
    assert registry.alias_version(cfg.engines.tracking_uri, MODEL, "champion") == before


def test_baselines_are_scored_on_the_same_rows_and_reach_mlflow_with_tensorboard(
    first: dict, validated: ValidationResult, cfg
) -> None:
    ev = first["evaluation"]
    assert set(ev.baselines) == {"hist_gradient_boosting", "hist_gradient_boosting_ordered", "logistic_regression"}
    for metrics in ev.baselines.values():
        assert metrics["rows"] == ev.new["rows"] and 0.5 < metrics["auc"] <= 1
        assert metrics["train_rows"] == validated.features.rows["train"]  # all of them: fewer than the cap
    client = registry.configure(cfg.engines.tracking_uri)
    run = client.get_run(first["registration"].mlflow_run_id)
    assert run.data.metrics["baseline_logistic_regression_auc"] == ev.baselines["logistic_regression"]["auc"]
    from retrainer.workloads.flight_delay import WORKLOAD

    for member in WORKLOAD.model.select(cfg.tuning.members).members:
        logged = [a.path for a in client.list_artifacts(run.info.run_id, f"tensorboard/{member.name}/final")]
        assert any("events.out.tfevents" in p for p in logged), logged


def test_the_gradient_boosting_baselines_are_what_independent_fits_on_the_runs_files_score(
    first: dict, validated: ValidationResult, cfg
) -> None:
    """Baseline honesty: the run's two HistGradientBoosting baselines equal plain scikit-learn fits written here
    from the Parquet files alone (pandas categories with native categorical support, default settings, the run's
    seed): every category native, and the integer ones (month, weekday, hour) left as numbers. "The network
    beats the baselines" is measured against the estimators a reader would fit, not weaker ones."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from retrainer.spec.contract import DType, Role
    from retrainer.workloads import get_workload

    contract = get_workload(MODEL).contract
    features = [c.name for c in contract.features]
    label = contract.label.name
    categorical = [c for c in contract.features if c.role == Role.CATEGORICAL]
    variants = {"hist_gradient_boosting": categorical,
                "hist_gradient_boosting_ordered": [c for c in categorical if c.dtype == DType.STRING]}  # fmt: skip
    for name, native in variants.items():
        train, test = _frame(validated.files.train), _frame(validated.files.eval)
        for column in native:
            seen = sorted(set(train[column.name].astype(str)))
            train[column.name] = pd.Categorical(train[column.name].astype(str), categories=seen)
            test[column.name] = pd.Categorical(test[column.name].astype(str), categories=seen)
        model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=cfg.tuning.seed)
        model.fit(train[features], train[label])
        independent = roc_auc_score(test[label], model.predict_proba(test[features])[:, 1])
        assert first["evaluation"].baselines[name]["auc"] == pytest.approx(independent, abs=1e-3), name


def _frame(folder) -> pd.DataFrame:
    return ds.dataset(str(folder)).to_table().to_pandas()


def test_baselines_keep_at_most_max_rows_of_a_long_window(validated: ValidationResult) -> None:
    from retrainer.core import atomic
    from retrainer.core.fingerprint import parquet_parts
    from retrainer.training import baselines
    from retrainer.workloads.flight_delay import WORKLOAD

    out = baselines.fit_and_score(
        parquet_parts(validated.files.train), parquet_parts(validated.files.eval), WORKLOAD.contract,
        WORKLOAD.objective, atomic.read_json(validated.files.stats), max_rows=1000,
    )  # fmt: skip
    rows = validated.features.rows["train"]
    stride = -(-rows // 1000)
    assert {m["train_rows"] for m in out.values()} == {-(-rows // stride)} and rows > 1000
