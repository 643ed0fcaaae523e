"""Stage 6, register: log the run to MLflow, register the SavedModel, move the aliases.

The SavedModel is registered as itself (a pyfunc "model from code" that serves the folder), with an
MLflow signature built here (:func:`mlflow_signature`) from the contract's features and the
objective's output. A version is registered once per training run key: a rerun reuses it, and
completes any version tag a crash left out. The aliases move under the promotion lock
(:mod:`retrainer.registry.promotion`): ``challenger`` follows the newest-dated version; ``champion`` moves
only when the evaluation said promote against the champion of the moment, re-evaluating first if the
champion moved since; neither ever moves back in time.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.feature_files import FeatureFiles
from retrainer.core.layout import RunLayout
from retrainer.core.results import EvaluationResult, ExportResult, RegistrationResult, TrainingResult, ValidationResult
from retrainer.registry import promotion
from retrainer.spec.contract import Contract, DType
from retrainer.spec.objectives import Objective
from retrainer.stages.evaluate import evaluate_models
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)
RUN_KEY_TAG = "retrainer.run_key"
PYFUNC_FILE = Path(__file__).resolve().parent.parent / "serving" / "pyfunc_model.py"


def mlflow_signature(contract: Contract, objective: Objective) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    types = {DType.STRING: "string", DType.INT64: "long", DType.FLOAT64: "double"}
    inputs = Schema([ColSpec(types[c.dtype], c.name, required=True) for c in contract.features])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", objective.output_name)]))


def serving_requirements() -> list[str]:
    """Pinned from this environment: MLflow would otherwise load the model in a subprocess to infer them."""
    from importlib import metadata

    pins = []
    for names in (("tensorflow", "tensorflow-cpu"), ("mlflow",), ("numpy",), ("pandas",)):
        for name in names:
            try:
                pins.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return pins


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def register_model(
    validated: ValidationResult,
    training: TrainingResult,
    evaluation: EvaluationResult,
    exported: ExportResult,
    cfg: RunConfig,
) -> RegistrationResult:
    import mlflow

    workload = get_workload(cfg.run.workload)
    objective = workload.objective
    name = workload.registered_model
    tracking_uri = cfg.engines.tracking_uri
    layout = RunLayout.of(cfg)
    client = registry.configure(tracking_uri)
    run_key = training.run_key
    window = cfg.window

    exp_id = registry.experiment_id(tracking_uri, f"retrainer/{cfg.run.workload}")
    version = registry.find_version_of_run(tracking_uri, name, exp_id, RUN_KEY_TAG, run_key)
    reused = version is not None
    if version is None:
        tags = {
            "dag_id": cfg.run.dag_id,
            "run_id": cfg.run.run_id,
            "workload": cfg.run.workload,
            "objective": objective.name,
            "data_interval": _range(window.train_start, window.end),
            "train_fingerprint": validated.features.train_fingerprint,
            "git_commit": git_commit(),
            **_version_tags(cfg, training, evaluation),
        }
        run_name = f"{cfg.run.workload}-{cfg.run.date}"
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags) as run:
            mlflow.log_params(
                {
                    **training.hyperparameters,
                    "strategy": training.strategy,
                    "replicas": training.replicas,
                    "launcher": training.launcher,
                    "num_workers": training.num_workers,
                    "min_gain": cfg.tuning.min_gain,
                    "epochs_trained": training.epochs_trained,
                    "best_epoch": training.best_epoch,
                }
            )
            mlflow.log_metrics({f"new_{k}": v for k, v in evaluation.new.items()})
            if evaluation.champion:
                mlflow.log_metrics({f"champion_{k}": v for k, v in evaluation.champion.items()})
            for baseline, metrics in evaluation.baselines.items():
                mlflow.log_metrics({f"baseline_{baseline}_{k}": v for k, v in metrics.items()})
            for h in training.history:  # one curve per member and metric; the final fit's steps follow the selection's
                metrics = {"train_loss": h["loss"], **{k: v for k, v in h.items() if k.startswith(("train_", "val_"))}}
                prefix = f"{h['member']}_" if "member" in h else ""
                mlflow.log_metrics({f"{prefix}{k}": v for k, v in metrics.items()}, step=int(h["epoch"]))
            if training.tensorboard_dir and Path(training.tensorboard_dir).is_dir():
                mlflow.log_artifacts(training.tensorboard_dir, "tensorboard")
            report = validated.report
            if report.drift:
                mlflow.log_metrics({f"psi_{c}": v for c, v in report.drift.items()})
            mlflow.set_tags(
                {"validation.checks_could_fail": str(report.could_fail),
                 "validation.by_construction": str(report.by_construction),
                 "validation.warnings": str(len(report.warnings)), "drift_baseline": report.drift_baseline}
            )  # fmt: skip
            mlflow.log_dict(report.to_dict(), "validation.json")
            mlflow.log_dict(
                atomic.read_json(FeatureFiles(Path(validated.features_dir)).profile), registry.PROFILE_ARTIFACT
            )
            mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
            mlflow.log_dict(training.to_dict(), "training.json")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_FILE),
                artifacts={"saved_model": exported.saved_model_uri},
                signature=mlflow_signature(workload.contract, objective),
                pip_requirements=serving_requirements(),
                registered_model_name=name,
            )
            version = str(info.registered_model_version)
            mlflow_run_id = run.info.run_id
    else:
        mlflow_run_id = client.get_model_version(name, version).run_id
        log.info("training run %s already registered as %s v%s: reusing it", run_key[:12], name, version)
    _complete_tags(tracking_uri, name, version, _version_tags(cfg, training, evaluation))

    with promotion.promotion_lock(cfg.engines.data_root, name):
        promoted, note, before = _move_aliases(validated, training, evaluation, version, cfg)
    result = RegistrationResult(
        registered_model=name,
        version=version,
        reused_existing_version=reused,
        mlflow_run_id=mlflow_run_id,
        promoted=promoted,
        decision=note,
        champion_before=before,
        aliases=registry.aliases(tracking_uri, name),
        tracking_uri=tracking_uri,
    )
    layout.save(result)
    log.info("registered %s v%s, aliases %s (%s)", name, version, result.aliases, note)
    return result


def _range(start: Any, end: Any) -> str:
    return f"[{start}, {end})"


def _version_tags(cfg: RunConfig, training: TrainingResult, evaluation: EvaluationResult) -> dict[str, str]:
    """What a version says about itself: its run key, the run date the promotion policy compares, its data."""
    window, headline = cfg.window, evaluation.headline
    return {
        RUN_KEY_TAG: training.run_key,
        promotion.RUN_DATE_TAG: cfg.run.date.isoformat(),
        "train_range": _range(window.train_start, window.eval_start),
        "eval_range": _range(window.eval_start, window.end),
        f"new_{headline}": f"{evaluation.new[headline]:.6f}",
    }


def _complete_tags(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    """Set the tags the version lacks (a retry after a crash between registering and tagging)."""
    client = registry.configure(tracking_uri)
    have = registry.version_tags(tracking_uri, name, version)
    for key, value in tags.items():
        if key not in have:
            client.set_model_version_tag(name, version, key, value)


def _move_aliases(
    validated: ValidationResult, training: TrainingResult, evaluation: EvaluationResult, version: str, cfg: RunConfig
) -> tuple[bool, str, str | None]:
    """Under the promotion lock: (is this version champion now, why, the champion it found). Re-reads both
    aliases first."""
    name, uri = get_workload(cfg.run.workload).registered_model, cfg.engines.tracking_uri
    client = registry.configure(uri)
    challenger = promotion.holder(uri, name, registry.CHALLENGER)
    if promotion.older_than(cfg.run.date, challenger, registry.CHALLENGER) is None:
        client.set_registered_model_alias(name, registry.CHALLENGER, version)
    current = promotion.holder(uri, name, registry.CHAMPION)
    now = current.version if current else None
    if now == version:
        return True, f"already champion; {evaluation.reason}", now
    if not evaluation.promote:
        return False, evaluation.reason, now
    note = evaluation.reason
    if now != evaluation.champion_version:
        moved = (
            f"champion moved from {_v(evaluation.champion_version)} to {_v(now)} after this run was evaluated; "
            f"re-evaluated against {_v(now)}"
        )
        log.warning("%s", moved)
        evaluation = evaluate_models(validated, training, cfg)  # the lock is held: the champion cannot move again
        if not evaluation.promote:
            return False, f"not promoted: {moved}: {evaluation.reason}", now
        note = f"{moved}: {evaluation.reason}"
    client.set_registered_model_alias(name, registry.CHAMPION, version)
    return True, note, now


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no champion"
