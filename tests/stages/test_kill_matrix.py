"""A real SIGKILL of every stage of a run, then Airflow's retry: nothing half-done is ever read as done.

Each stage runs as a Celery worker runs it (the CLI in a process of its own, forked from one that preloaded the
tasks' libraries: :mod:`support.prefork`) and is killed twice before the attempt
that succeeds: right after its first commit (the first file or folder it moves into place: a per-day raw-gate
record, a feature-store day, the validated features, a checkpoint's JSON, the baselines, the SavedModel) and
after its last one (all its work done, the process killed before it could report success, so Airflow retries
a stage that had finished). The register step's own kill points are
``test_promotion_policy.test_register_killed_at_each_step_then_retried_registers_once_and_announces_once``, a
chief killed mid-epoch is ``tests/e2e/test_training_operator.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrainer import registry
from retrainer.core.fingerprint import tree_digest
from retrainer.core.layout import RunLayout
from retrainer.core.results import (
    EvaluationResult,
    ExportResult,
    FeaturesResult,
    RawGateResult,
    RegistrationResult,
    TrainingResult,
    ValidationResult,
)
from retrainer.registry import promotion
from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG
from retrainer.stages.register import RUN_KEY_TAG
from support import SPARK_CONNECT_URL, prefork, run_root, small_config

MODEL = "flight_delay"

# The child: count the commits (atomic.write_text, which write_json uses, and atomic.replace_dir, which
# staged folders use) and SIGKILL itself right after the N-th, or, with N = 0, after the stage returned.
KILLED_STAGE = """
import os, signal, sys
from retrainer.core import atomic
after = int(sys.argv[1])
commits = [0]

def counting(fn):
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        commits[0] += 1
        if commits[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapper

atomic.write_text = counting(atomic.write_text)
atomic.replace_dir = counting(atomic.replace_dir)
from retrainer.runners.cli import main
main(sys.argv[2:])
os.kill(os.getpid(), signal.SIGKILL)  # its work done, the process dies before reporting success
"""
STAGES = ("check-raw", "features", "validate", "train", "evaluate", "export", "register")


def test_every_stage_killed_after_its_first_and_its_last_commit_then_retried_ends_as_one_clean_run(
    spark, landed: Path, tmp_path: Path
) -> None:
    root, tracking = run_root(tmp_path, landed)
    cfg = small_config(root, tracking)
    env = {**os.environ, **cfg.secret_env(), "RETRAINER_SPARK_MASTER": SPARK_CONNECT_URL}
    for stage in STAGES:
        for after in (1, 0):  # the first commit, then everything
            child = prefork.run("-c", KILLED_STAGE, [str(after), stage, *cfg.to_argv()], env,
                                tmp_path / f"{stage}-{after}.log", timeout=600)  # fmt: skip
            assert child.returncode == -9, (stage, after, child.output[-3000:])  # it was killed, not failed
        retry = prefork.run("-m", "retrainer.runners.cli", [stage, *cfg.to_argv()], env, tmp_path / f"{stage}.log",
                            timeout=600)  # fmt: skip
        assert retry.returncode == 0, (stage, retry.output[-3000:])

    layout = RunLayout.of(cfg)
    gate, features = layout.load(RawGateResult), layout.load(FeaturesResult)
    validated, training = layout.load(ValidationResult), layout.load(TrainingResult)
    evaluation, exported = layout.load(EvaluationResult), layout.load(ExportResult)
    registration = layout.load(RegistrationResult)
    assert gate.report.success and validated.report.success and features.rows["train"] > 0
    assert validated.features.train_fingerprint == features.train_fingerprint  # validated what features built
    # one version, of this training run, with the bytes export checked, and champion
    versions = registry.configure(tracking).search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == [registration.version]
    assert versions[0].tags[RUN_KEY_TAG] == training.run_key == evaluation.run_key == exported.run_key
    assert versions[0].tags[SAVED_MODEL_DIGEST_TAG] == exported.saved_model_digest
    assert tree_digest(Path(exported.saved_model_uri)) == exported.saved_model_digest
    assert registry.alias_version(tracking, MODEL, registry.CHAMPION) == registration.version
    assert promotion.high_water(tracking, MODEL) == promotion.Holder(registration.version, cfg.run.date)
    assert registration.promoted and registration.champion_changed  # announced by the attempt that succeeded
    # What a killed attempt was writing is left under a name no reader opens (a validation report's staging
    # folder, killed mid-way); retention removes it (`retrainer prune`, scheduled by the prune DAG), keeping
    # the registered run's folder whole.
    from retrainer.stages.prune import prune

    def leftovers() -> list[Path]:
        return sorted(p for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)

    assert all(p.name.startswith((".validation.", ".raw_gate.", ".features")) for p in leftovers()), leftovers()
    plan = prune(root, MODEL, tracking, keep_last=1, min_age_s=0)
    assert not leftovers() and layout.root.relative_to(root).as_posix() in plan.kept
    assert layout.load(RegistrationResult) == registration and tree_digest(Path(exported.saved_model_uri)) == (
        exported.saved_model_digest)  # fmt: skip
