"""TensorFlow training: the contract-built model, streamed input, checkpoint resume, and strategies."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrainer.core.atomic import read_json
from retrainer.core.fingerprint import parquet_parts
from retrainer.core.layout import RunLayout
from retrainer.core.results import TrainingResult, ValidationResult
from retrainer.training.strategy import is_chief_from_env, tf_config
from retrainer.training.train_spec import TrainOutcome, TrainSpec
from retrainer.workloads.flight_delay import CONTRACT, WORKLOAD
from support import ROOT, small_config

ENSEMBLE = WORKLOAD.model  # the ensemble's own tests train every member
ONE = ENSEMBLE.select("joint")  # the plumbing's tests (resume, run keys, strategies) train one
NAMES = list(ENSEMBLE.member_names)


@pytest.fixture(scope="module")
def stats(validated: ValidationResult) -> dict:
    return read_json(validated.files.stats)


def _epochs(out: TrainOutcome, member: str, phase: str | None = None) -> list[int]:
    return [h["epoch"] for h in out.history if h["member"] == member and phase in (None, h["phase"])]


def _train(
    validated: ValidationResult,
    stats: dict,
    ckpt: Path,
    run_key: str,
    epochs: int,
    learning_rate=0.003,
    spec=ONE,
    **extra,
) -> TrainOutcome:
    from retrainer.training.loop import train

    return train(
        TrainSpec(
            train_uri=str(validated.files.train),
            stats=stats,
            contract=CONTRACT,
            objective=WORKLOAD.objective,
            checkpoint_dir=str(ckpt),
            run_key=run_key,
            epochs=epochs,
            batch_size=256,
            learning_rate=learning_rate,
            hidden_units=8,
            seed=1,
            strategy_name="default",
            model=spec,
            **extra,
        )
    )


def test_a_change_to_the_checkpointed_code_gives_a_new_run_key(
    validated: ValidationResult, stats: dict, chain_root: Path, chain_tracking: str, tmp_path: Path, monkeypatch
) -> None:
    """After an upgrade that changes the network (or the head, or what the loop saves), a retry of the same date
    starts over in a new checkpoint folder instead of restoring old weights into a different graph."""
    import shutil

    from retrainer.training import worker

    cfg = small_config(chain_root, chain_tracking)
    before = worker.run_key(validated, stats, cfg)
    copies = {name: tmp_path / f"{name}.py" for name in worker.CHECKPOINT_CODE}
    for name, path in worker.checkpoint_code_files().items():
        shutil.copy(path, copies[name])
    monkeypatch.setattr(worker, "checkpoint_code_files", lambda: copies)
    assert worker.run_key(validated, stats, cfg) == before  # the same code: the same key, so a retry resumes
    with copies["retrainer.training.model"].open("a") as fh:
        fh.write("\n# a third hidden layer\n")
    assert worker.run_key(validated, stats, cfg) != before


def test_a_measurement_beside_the_run_trains_its_own_checkpoints_and_leaves_the_runs_result_alone(
    validated: ValidationResult, chain_root: Path, chain_tracking: str
) -> None:
    """``bench/model_seeds.py`` trains the run's model with other seeds: never the run's ``training.json``."""
    from retrainer.training import worker

    cfg = small_config(chain_root, chain_tracking)
    layout = RunLayout.of(cfg)
    before = layout.load_optional(TrainingResult)
    other = worker.run(cfg.replace(seed=7), save=False, layout=layout)
    assert other.hyperparameters["seed"] == 7 and Path(other.checkpoint + ".index").exists()
    assert other.run_key != worker.current_run_key(cfg)  # its own checkpoint folder, beside the run's
    assert layout.load_optional(TrainingResult) == before


def test_model_inputs_are_the_contract_features(stats: dict) -> None:
    import tensorflow as tf

    from retrainer.training.model import build_model

    model = build_model(CONTRACT, WORKLOAD.objective, stats, hidden_units=8)
    assert {k: v.dtype for k, v in model.input.items()} == CONTRACT.serving_dtypes()
    row = {
        "month": [[1]], "day_of_week": [[3]], "sched_dep_hour": [[9]], "carrier": [["ZZ"]], "origin": [["JFK"]],
        "dest": [["NOPE"]], "distance": [[1000.0]], "temp": [[np.nan]], "humid": [[50.0]], "wind_speed": [[5.0]],
        "precip": [[0.0]], "pressure": [[np.nan]], "visib": [[10.0]], "plane_age": [[np.nan]], "seats": [[np.nan]],
        "carrier_late_rate_7d": [[0.2]], "origin_late_rate_7d": [[np.nan]],
    }  # fmt: skip
    inputs = {k: tf.constant(v, dtype=CONTRACT.serving_dtypes()[k]) for k, v in row.items()}
    p = float(model(inputs)[0, 0])
    assert 0.0 < p < 1.0  # unseen categories go to out-of-vocabulary; missing numbers are imputed


def test_dataset_streams_typed_batches(validated: ValidationResult) -> None:
    from retrainer.training.dataset import make_dataset

    ds = make_dataset(parquet_parts(validated.files.train), CONTRACT, batch_size=100)
    x, y = next(iter(ds))
    assert y.shape == (100, 1) and set(np.unique(y.numpy())) <= {0.0, 1.0}
    assert x["carrier"].dtype.name == "string" and x["month"].dtype.name == "int64"
    assert x["distance"].shape == (100, 1)
    total = sum(int(b[1].shape[0]) for b in ds)
    assert total == validated.features.rows["train"]


def test_replayed_passes_give_the_same_batches_and_memory_stays_within_the_budget(validated: ValidationResult) -> None:
    """Later passes come from memory, shuffled by the same seeded generator: a seed gives the batches it gave
    when every pass was read from disk; a file past the budget is read from disk on every pass."""
    from retrainer.training.dataset import ChunkReplay, make_dataset

    files = parquet_parts(validated.files.train)

    def passes(replay_bytes: int) -> list[np.ndarray]:
        ds = make_dataset(files, CONTRACT, 64, seed=3, repeat=True, replay_bytes=replay_bytes)
        rows = validated.features.rows["train"]
        batches = [b for _, b in zip(range(3 * rows // 64), ds, strict=False)]  # three passes and more
        return [np.concatenate([x["distance"].numpy(), y.numpy()], axis=1) for x, y in batches]

    from_disk = passes(0)
    for replayed_batch, disk_batch in zip(passes(64 << 20), from_disk, strict=True):
        np.testing.assert_array_equal(replayed_batch, disk_batch)
    assert any(not np.array_equal(a, b) for a, b in zip(from_disk[:5], from_disk[len(from_disk) // 3 :], strict=False))

    replay = ChunkReplay(max_bytes=1)  # nothing fits: every file is streamed
    chunks = [(dict(x=np.zeros((4, 1))), np.zeros((4, 1)))]
    assert len(list(replay.record("f", iter(chunks)))) == 1 and replay.chunks("f") is None and replay.held == 0
    roomy = ChunkReplay(max_bytes=1 << 20)
    list(roomy.record("f", iter(chunks)))
    assert roomy.chunks("f") == chunks and 0 < roomy.held <= 1 << 20


def test_training_logs_each_epoch_and_checkpoints(
    validated: ValidationResult, stats: dict, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="retrainer.training.loop")
    out = _train(validated, stats, tmp_path / "ckpt", "key-a", epochs=2, spec=ENSEMBLE)
    assert [h["member"] for h in out.history] == [n for _ in (1, 2) for n in NAMES]  # together, epoch by epoch
    assert all(_epochs(out, name) == [1, 2] for name in NAMES) and out.member_epochs == dict.fromkeys(NAMES, 2)
    assert out.history[1]["loss"] < out.history[0]["loss"] * 1.5
    assert [r.message.split(" loss")[0] for r in caplog.records if " epoch " in r.message] == [
        f"{name} final epoch {e}/2" for e in (1, 2) for name in NAMES
    ]
    warm = [m for m in ENSEMBLE.members if m.warm_start_epochs]
    assert warm and sum("warm start, the wide part alone" in r.message for r in caplog.records) == len(warm)
    assert out.checkpoint == str(tmp_path / "ckpt" / "ensemble" / "ckpt-1")
    assert (tmp_path / "ckpt" / "final" / "ckpt-2.index").exists()  # the phase: every member, each epoch
    for name in NAMES:
        assert (tmp_path / "ckpt" / "final" / name / "ckpt-2.index").exists()  # the member where it stopped
        events = list((tmp_path / "ckpt" / "tensorboard" / name / "final").glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0  # TensorBoard's event file, with the epochs' scalars


def test_the_ensemble_checkpoint_holds_each_members_final_weights(
    validated: ValidationResult, stats: dict, tmp_path: Path
) -> None:
    """Serving restores one checkpoint; its members must be the ones each final fit ended with, and the
    ensemble's output must be the objective's output of the members' mean logit."""
    import tensorflow as tf

    from retrainer.training.dataset import arrow_to_inputs, iter_record_batches
    from retrainer.training.model import build_model

    out = _train(validated, stats, tmp_path / "ckpt", "key-ens", epochs=1, spec=ENSEMBLE)
    batch = arrow_to_inputs(next(iter_record_batches(parquet_parts(validated.files.eval), CONTRACT)), CONTRACT)
    model = build_model(CONTRACT, WORKLOAD.objective, stats, hidden_units=8)
    tf.train.Checkpoint(model=model.network).restore(out.checkpoint).assert_existing_objects_matched()
    members = []
    for name in NAMES:
        alone = build_model(CONTRACT, WORKLOAD.objective, stats, hidden_units=8)
        weights = tf.train.latest_checkpoint(str(tmp_path / "ckpt" / "final" / name))
        tf.train.Checkpoint(model=alone.network.get_layer(name)).restore(weights).expect_partial()
        members.append(alone.members[name](batch).numpy())
        np.testing.assert_allclose(model.members[name](batch).numpy(), members[-1], atol=1e-6)
    assert not np.allclose(members[0], members[1], atol=1e-3)  # two different models, not one twice
    logit = np.mean([np.log(p / (1 - p)) for p in members], axis=0)
    np.testing.assert_allclose(model(batch).numpy(), 1 / (1 + np.exp(-logit)), atol=1e-5)


def test_a_retry_resumes_from_the_last_checkpoint(validated: ValidationResult, stats: dict, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _train(validated, stats, ckpt, "key-b", epochs=1, spec=ENSEMBLE)  # as if it died after epoch 1 of 3
    resumed = _train(validated, stats, ckpt, "key-b", epochs=3, spec=ENSEMBLE)
    assert first.resumed_from_epoch == 0
    assert resumed.resumed_from_epoch == 1
    assert all(_epochs(resumed, name) == [2, 3] for name in NAMES) and resumed.epochs_trained == 3 * len(NAMES)
    assert resumed.member_epochs == dict.fromkeys(NAMES, 3)
    finished = _train(validated, stats, ckpt, "key-b", epochs=3, spec=ENSEMBLE)  # after success: nothing to train
    assert finished.resumed_from_epoch == 3 and finished.history == []
    assert finished.member_epochs == dict.fromkeys(NAMES, 3)


def test_checkpoints_follow_the_interval_and_always_close_a_phase(
    validated: ValidationResult, stats: dict, tmp_path: Path
) -> None:
    """A checkpoint costs more than a short epoch: with an interval the phase saves only when it has passed
    and after its last epoch; with 0, every epoch (what a retry resumes from either way)."""
    _train(validated, stats, tmp_path / "sparse", "key-i", epochs=3, checkpoint_seconds=3600)
    assert sorted(p.name for p in (tmp_path / "sparse" / "final").glob("ckpt-*.index")) == ["ckpt-3.index"]
    assert (tmp_path / "sparse" / "final" / "joint" / "ckpt-3.index").exists()  # where the member stopped
    _train(validated, stats, tmp_path / "dense", "key-i", epochs=3)  # checkpoint_seconds 0: each epoch
    assert sorted(p.name for p in (tmp_path / "dense" / "final").glob("ckpt-*.index")) == [
        "ckpt-2.index",
        "ckpt-3.index",
    ]  # fmt: skip  (the last two kept)
    resumed = _train(validated, stats, tmp_path / "sparse", "key-i", epochs=4, checkpoint_seconds=3600)
    assert resumed.resumed_from_epoch == 3 and _epochs(resumed, "joint") == [4]


def test_checkpoints_of_another_run_are_not_resumed(validated: ValidationResult, stats: dict, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    _train(validated, stats, ckpt, "key-c", epochs=1)
    other = _train(validated, stats, ckpt, "key-d", epochs=1)
    assert other.resumed_from_epoch == 0 and len(other.history) == 1
    assert read_json(ckpt / "run_key.json") == {"run_key": "key-d"}


def test_early_stopping_picks_the_epochs_and_the_final_model_also_learns_from_the_validation_days(
    validated: ValidationResult, stats: dict, tmp_path: Path
) -> None:
    from retrainer.training.dataset import count_rows

    files = parquet_parts(validated.files.train)
    fit, held_out = ("2013-01-29", "2013-02-02"), ("2013-02-02", "2013-02-03")
    out = _train(validated, stats, tmp_path / "ckpt", "key-es", epochs=6, fit_days=fit, validation_days=held_out,
                 patience=1, learning_rate=0.05, spec=ENSEMBLE)  # fmt: skip
    for name in NAMES:  # each member early-stops on its own validation score
        scores = [h["val_auc"] for h in out.history if h["member"] == name and h["phase"] == "select"]
        best = 1 + scores.index(max(scores))
        assert out.best_validation[f"{name}_val_auc"] == pytest.approx(max(scores))
        # stopped one epoch after the best (patience 1) unless the last epoch was the best
        assert len(scores) == min(6, best + 1)
        assert _epochs(out, name, "final") == list(range(1, best + 1)) and out.member_epochs[name] == best
        assert (tmp_path / "ckpt" / "final" / name / f"ckpt-{best}.index").exists()
    assert out.best_epoch == max(out.member_epochs.values())
    whole = count_rows(files, CONTRACT, ("2013-01-29", "2013-02-03"))
    assert out.fit_rows == whole == validated.features.rows["train"] > count_rows(files, CONTRACT, fit)
    assert out.epochs_trained == len(out.history)


def test_validation_rows_read_once_score_as_the_streamed_evaluation_with_the_current_weights(
    validated: ValidationResult, stats: dict
) -> None:
    """Early stopping scores its validation days through one traced function over rows read once; it must
    give the streamed evaluation's metrics, and follow the weights as they train (no weights baked in)."""
    from retrainer.training.model import build_model
    from retrainer.training.phase import ValidationRows, score

    files, days = [str(p) for p in parquet_parts(validated.files.train)], ("2013-02-01", "2013-02-03")
    model = build_model(CONTRACT, WORKLOAD.objective, stats, hidden_units=8, seed=1)
    rows = ValidationRows(lambda x: {"model": model(x, training=False)}, files, CONTRACT, WORKLOAD.objective, days)
    before = rows.score()["model"]
    assert before == pytest.approx(score(model, files, CONTRACT, WORKLOAD.objective, days), abs=1e-6)
    for v in model.network.trainable_variables:
        v.assign(v + 0.05 * np.random.default_rng(0).standard_normal(v.shape).astype("float32"))
    after = rows.score()["model"]
    assert after["auc"] != pytest.approx(before["auc"], abs=1e-4)
    assert after == pytest.approx(score(model, files, CONTRACT, WORKLOAD.objective, days), abs=1e-6)
    with pytest.raises(ValueError, match="no validation rows"):
        ValidationRows(lambda x: {"model": model(x)}, files, CONTRACT, WORKLOAD.objective, ("2014-01-01", "2014-01-02"))


def test_the_final_phase_restarts_from_the_initial_state_on_the_same_trace(
    validated: ValidationResult, stats: dict, tmp_path: Path
) -> None:
    """Both phases share one build and one traced step: the final phase after a selection must train exactly
    as the same phase run first in a fresh process would (weights, optimizers and dropout back to the start),
    and the step must not be traced again (the phase's cost is its epochs, not a new graph)."""
    import tensorflow as tf

    from retrainer.training.loop import _phases, _runtime
    from retrainer.training.phase import Phase, Trainer

    def spec(ckpt: str) -> TrainSpec:
        return TrainSpec(
            train_uri=str(validated.files.train), stats=stats, contract=CONTRACT, objective=WORKLOAD.objective,
            checkpoint_dir=str(tmp_path / ckpt), run_key=ckpt, epochs=3, batch_size=256, learning_rate=0.05,
            hidden_units=8, seed=1, strategy_name="default", model=ENSEMBLE, patience=1,
            fit_days=("2013-01-29", "2013-02-02"), validation_days=("2013-02-02", "2013-02-03"),
        )  # fmt: skip

    both = Trainer(_runtime(spec("both")))
    select, final = _phases(both.rt, both)
    assert select.history and final.history
    assert both.step.experimental_get_tracing_count() == 1
    alone = Trainer(_runtime(spec("alone")))
    final_alone = alone.run(
        Phase("final", ("2013-01-29", "2013-02-03"), {n: m.epochs for n, m in final.members.items()})
    )
    assert [h["loss"] for h in final_alone.history] == pytest.approx([h["loss"] for h in final.history], rel=1e-6)
    for name in NAMES:
        a, b = alone.build.fits[name].weights, both.build.fits[name].weights
        tf.train.Checkpoint(model=a).read(final_alone.members[name].weights).expect_partial()
        tf.train.Checkpoint(model=b).read(final.members[name].weights).expect_partial()
        for va, vb in zip(a.weights, b.weights, strict=True):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


def test_a_diverged_epoch_fails_before_anything_is_saved(
    validated: ValidationResult, stats: dict, tmp_path: Path, monkeypatch
) -> None:
    import copy

    broken = copy.deepcopy(stats)
    broken["numeric"]["distance"]["mean"] = float("inf")  # every row's normalised distance is -inf
    with pytest.raises(FloatingPointError, match=f"{NAMES[0]}: the warm start of the wide part diverged: loss nan"):
        _train(validated, broken, tmp_path / "ckpt", "key-nan", epochs=2, spec=ENSEMBLE.select(NAMES[0]))
    assert not list((tmp_path / "ckpt").rglob("ckpt-*")), "a checkpoint of diverged weights was saved"
    cold = next(m for m in ENSEMBLE.members if not m.warm_start_epochs)  # no warm start: the epoch's own check
    with pytest.raises(FloatingPointError, match=rf"diverged in epoch 1 \({cold.name} final\): loss nan; nothing of"):
        _train(validated, broken, tmp_path / "cold", "key-nan", epochs=2, spec=ENSEMBLE.select(cold.name))
    assert not list((tmp_path / "cold").rglob("ckpt-*")), "a checkpoint of diverged weights was saved"


def test_a_model_loads_only_from_the_training_run_it_belongs_to(
    validated: ValidationResult, chain_root: Path, chain_tracking: str, tmp_path: Path
) -> None:
    import dataclasses

    from retrainer.stages.train import train_model
    from retrainer.training.loop import load_trained_model

    cfg = small_config(chain_root, chain_tracking)
    training = train_model(validated, cfg)
    assert load_trained_model(validated, training, WORKLOAD) is not None
    other = dataclasses.replace(training, run_key="another-run")
    with pytest.raises(ValueError, match=f"belong to training run {training.run_key}, not another-run"):
        load_trained_model(validated, other, WORKLOAD)


def test_train_stage_refuses_unvalidated_features(
    validated: ValidationResult, chain_root: Path, chain_tracking: str
) -> None:
    import dataclasses

    from retrainer.stages.train import NotValidated, train_model

    cfg = small_config(chain_root, chain_tracking)
    with pytest.raises(NotValidated, match="did not pass validation"):
        train_model(validated.features, cfg)  # the features as built, not validated
    failed = dataclasses.replace(validated, report=dataclasses.replace(validated.report, success=False))
    with pytest.raises(NotValidated, match="did not pass validation"):
        train_model(failed, cfg)
    other = dataclasses.replace(validated, features=dataclasses.replace(validated.features, train_fingerprint="x"))
    with pytest.raises(NotValidated, match="not the ones passed to train"):
        train_model(other, cfg)


def test_tf_config_for_a_worker_group() -> None:
    cfg = tf_config(["127.0.0.1:2001", "127.0.0.1:2002"], 1)
    assert cfg == {"cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError):
        tf_config(["a:1"], 1)


def test_chief_is_worker_zero_or_the_chief_task(monkeypatch) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config(["a:1", "b:2"], 0)))
    assert is_chief_from_env()
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config(["a:1", "b:2"], 1)))
    assert not is_chief_from_env()
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief"}})
    )
    assert is_chief_from_env()
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief_from_env()


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from retrainer.core.atomic import read_json
from retrainer.core.results import ValidationResult
from retrainer.training.loop import TrainSpec, train
from retrainer.workloads.flight_delay import WORKLOAD
v = ValidationResult.from_dict(json.loads(sys.argv[1]))
out = train(TrainSpec(train_uri=str(v.files.train), stats=read_json(v.files.stats), contract=WORKLOAD.contract,
            objective=WORKLOAD.objective, checkpoint_dir=sys.argv[2], run_key="mirrored", epochs=1, batch_size=128,
            learning_rate=0.003, hidden_units=8, seed=1, strategy_name="mirrored",
            model=WORKLOAD.model.select("joint")))
print(json.dumps(out.to_dict()))
"""


def test_mirrored_strategy_on_two_logical_cpus(validated: ValidationResult, tmp_path: Path) -> None:
    """Logical devices must be configured before TF initialises, so this runs in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(validated.to_dict()), str(tmp_path / "ckpt")],
        capture_output=True, text=True, env=os.environ, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["strategy"] == "MirroredStrategy" and out["replicas"] == 2 and out["global_batch_size"] == 256
    assert np.isfinite(out["history"][0]["loss"])


def test_multi_worker_strategy_on_two_local_processes(
    validated: ValidationResult, chain_root: Path, chain_tracking: str, caplog
) -> None:
    from retrainer.stages.train import train_model

    caplog.set_level(logging.INFO, logger="retrainer.training.local_processes")
    cfg = small_config(
        chain_root, chain_tracking, epochs=2, batch_size=128, launcher="local_processes", num_workers=2, seed=7
    )
    out = train_model(validated, cfg)  # two `python -m retrainer.training.worker` processes
    assert out.strategy == "CollectiveAllReduceStrategy" and out.replicas == 2
    assert (out.launcher, out.num_workers, out.global_batch_size) == ("local_processes", 2, 256)
    assert [(h["member"], h["phase"], h["epoch"]) for h in out.history][:2] == [
        ("joint", "select", 1),
        ("joint", "select", 2),
    ]
    assert out.hyperparameters["seed"] == 7  # the worker rebuilt the whole config from its argv
    layout = RunLayout.of(cfg)
    assert out.checkpoint == str(layout.checkpoints_of(out.run_key) / "ensemble" / "ckpt-1")
    assert layout.load(TrainingResult) == out
    assert not list(layout.checkpoints_of(out.run_key).glob("_worker-*")), "worker 1's own checkpoints were left"
    assert "worker done (chief: False)" in (layout.worker_logs / "worker-1.log").read_text()
    streamed = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("[worker 1] ") and "joint select epoch 2/2" in m for m in streamed), "not streamed"


def test_the_tpu_input_path_preprocesses_on_the_host_and_trains_the_same_network(
    validated: ValidationResult, stats: dict, tmp_path: Path
) -> None:
    """Under TPUStrategy the lookups run in tf.data and the network trains alone; on CPU the same flag
    must give the same weights as preprocessing inside the model, and the chained model serves raw rows."""
    import tensorflow as tf

    from retrainer.training.dataset import arrow_to_inputs, iter_record_batches
    from retrainer.training.model import build_model

    inside = _train(validated, stats, tmp_path / "inside", "key-host", epochs=1)
    on_host = _train(validated, stats, tmp_path / "host", "key-host", epochs=1, host_preprocessing=True)
    batch = next(iter_record_batches(parquet_parts(validated.files.eval), CONTRACT))
    predictions = []
    for out in (inside, on_host):
        model = build_model(CONTRACT, WORKLOAD.objective, stats, hidden_units=8, spec=ONE)
        tf.train.Checkpoint(model=model.network).restore(out.checkpoint).assert_existing_objects_matched()
        predictions.append(model(arrow_to_inputs(batch, CONTRACT)).numpy())
    assert predictions[0].shape == (batch.num_rows, 1) and np.isfinite(predictions[1]).all()
    np.testing.assert_allclose(predictions[1], predictions[0], atol=1e-4)


def test_mixed_precision_and_xla_switches_train(validated: ValidationResult, stats: dict, tmp_path: Path) -> None:
    """For GPUs and TPUs; here on CPU (slow there, but it must run): float16 compute, float32 output."""
    import keras

    try:
        out = _train(validated, stats, tmp_path / "ckpt", "key-mixed", epochs=1, precision="mixed_float16", xla="on")
        assert out.dtype_policy == "mixed_float16" and np.isfinite(out.history[0]["loss"])
        from retrainer.training.model import build_model

        model = build_model(CONTRACT, WORKLOAD.objective, stats, hidden_units=8)
        assert model.network.get_layer(NAMES[0]).get_layer("hidden_1").compute_dtype == "float16"
        assert model.output.dtype == "float32"  # a float16 probability would round away what AUC ranks
    finally:
        keras.mixed_precision.set_global_policy("float32")
        import tensorflow as tf

        tf.config.optimizer.set_jit(False)
