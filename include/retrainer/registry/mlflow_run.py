"""One training run as an MLflow run: params, metrics, curves, artefacts, and the SavedModel registered as a
version of the workload's model.

The SavedModel is registered as itself (a pyfunc "model from code" that serves the folder), with an
MLflow signature built from the contract's features and the objective's output.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.feature_files import FeatureFiles
from retrainer.core.layout import ExportFiles
from retrainer.core.results import (
    EPOCHS_STREAMED_TAG,
    EvaluationResult,
    ExportResult,
    TrainingResult,
    ValidationResult,
    epoch_curves,
)
from retrainer.registry.artefacts import SAVED_MODEL_ARTIFACT
from retrainer.spec.contract import Contract, DType
from retrainer.spec.objectives import Objective
from retrainer.workloads import Workload, get_workload

PYFUNC_FILE = Path(__file__).resolve().parent.parent / "serving" / "pyfunc_model.py"
PYFUNC_CODE = [PYFUNC_FILE.parent / "signature_inputs.py"]  # what PYFUNC_FILE imports, logged beside it


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


def range_text(start: Any, end: Any) -> str:
    """A half-open day range as the tags write it: ``[start, end)``."""
    return f"[{start}, {end})"


def open_run(tracking_uri: str, experiment_id: str, own: dict[str, str], run_name: str) -> Any:
    """The MLflow run (``mlflow.entities.Run``) of one training run (the run key and run folder tags ``own`` name
    it): the one an earlier step opened (``train``, for the chief to stream its epochs into; a ``register`` attempt
    that died), else a new one. One run per training run, however many attempts."""
    client = registry.configure(tracking_uri)
    found = client.search_runs([experiment_id], filter_string=registry.tag_filter(own), max_results=1,
                               order_by=["attributes.start_time DESC"])  # fmt: skip
    return found[0] if found else client.create_run(experiment_id, run_name=run_name, tags=own)


def log_and_register(
    validated: ValidationResult,
    training: TrainingResult,
    evaluation: EvaluationResult,
    exported: ExportResult,
    cfg: RunConfig,
    experiment_id: str,
    version_tags: dict[str, str],
    own_tags: tuple[str, ...],
) -> tuple[str, str]:
    """The MLflow run of this training run (:func:`open_run`: the one ``train`` streamed into, or a new one) with
    everything logged, its SavedModel registered: (the version, the MLflow run id). ``own_tags``: the keys of
    ``version_tags`` that name the training run."""
    import mlflow
    from mlflow.entities import Param, RunTag

    workload: Workload = get_workload(cfg.run.workload)
    objective, name, window = workload.objective, workload.registered_model, cfg.window
    tags = {
        "dag_id": cfg.run.dag_id,
        "run_id": cfg.run.run_id,
        "workload": cfg.run.workload,
        "objective": objective.name,
        "run_window": range_text(window.train_start, window.end),
        "train_fingerprint": validated.features.train_fingerprint,
        "git_commit": git_commit(),
        **version_tags,
    }
    own = {k: version_tags[k] for k in own_tags}
    opened = open_run(cfg.engines.tracking_uri, experiment_id, own, f"{cfg.run.workload}-{cfg.run.date}")
    client = mlflow.MlflowClient()
    streamed = opened.data.tags.get(EPOCHS_STREAMED_TAG) == "true"
    with mlflow.start_run(run_id=opened.info.run_id) as run:
        # Parameters, metrics (the epoch curves too, unless streamed) and tags in one batch: against a tracking
        # server each fluent call is a request, and a three-member model's curves were one per member and epoch.
        report = validated.report
        client.log_batch(
            run.info.run_id,
            metrics=_metrics(training, evaluation, report.drift, curves=not streamed),
            params=[Param(k, str(v)) for k, v in _params(training, cfg).items()],
            tags=[
                RunTag(k, v)
                for k, v in {
                    **tags,
                    "validation.checks_could_fail": str(report.could_fail),
                    "validation.by_construction": str(report.by_construction),
                    "validation.warnings": str(len(report.warnings)),
                    "drift_baseline": str(report.drift_baseline),
                }.items()
            ],
        )
        if training.tensorboard_dir and Path(training.tensorboard_dir).is_dir():
            mlflow.log_artifacts(training.tensorboard_dir, "tensorboard")
        for plot in evaluation.plots:
            if Path(plot).is_file():
                mlflow.log_artifact(plot, "plots")
        if exported.tflite_uri and Path(exported.tflite_uri).is_file():  # checked against the SavedModel by export
            mlflow.log_artifact(exported.tflite_uri, "tflite")
            recipe = ExportFiles(Path(exported.saved_model_uri).parent).tflite_inputs
            if recipe.is_file():
                mlflow.log_artifact(str(recipe), "tflite")
        mlflow.log_dict(report.to_dict(), "validation.json")
        mlflow.log_dict(atomic.read_json(FeatureFiles(Path(validated.features_dir)).profile), registry.PROFILE_ARTIFACT)
        mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
        mlflow.log_dict(training.to_dict(), "training.json")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            code_paths=[str(f) for f in PYFUNC_CODE],
            artifacts={SAVED_MODEL_ARTIFACT: exported.saved_model_uri},
            signature=mlflow_signature(workload.contract, objective),
            pip_requirements=serving_requirements(),
            registered_model_name=name,
            # MLflow links to the logged model the run's metrics of the step it is logged at. At the default step 0
            # that copied every summary metric (the champion's, the baselines', drift: about 80) onto the model, a
            # batch that grows with a reopened run's points, and the model's page listed the champion's AUC as its
            # own. At its last epoch's step only that epoch's curve points are linked; its evaluation metrics are
            # linked below, with the dataset they were measured on.
            step=max(1, training.best_epoch),
        )
        _link_to_model(info.model_id, validated, evaluation)
        _log_input_example(info.model_id, input_example(validated, workload.contract))
    return str(info.registered_model_version), run.info.run_id


INPUT_EXAMPLE_ROWS = 5


def input_example(validated: ValidationResult, contract: Contract) -> Any:
    """The first evaluation rows, the model's input columns only: what a request to the served model looks like."""
    import pyarrow.parquet as pq

    from retrainer.core.fingerprint import parquet_parts

    first = pq.ParquetFile(parquet_parts(validated.files.eval)[0])
    batch = next(first.iter_batches(batch_size=INPUT_EXAMPLE_ROWS, columns=[c.name for c in contract.features]))
    return batch.to_pandas()


INPUT_EXAMPLE_FILE = "input_example.json"


def _log_input_example(model_id: str, frame: Any) -> None:
    """The example rows as an artefact of the logged model (``input_example.json``, pandas' ``split`` orient, the
    format MLflow's own example file uses), shown on the model's page. Not through ``log_model(input_example=)``:
    MLflow then loads the SavedModel and predicts the example in the register process (1.5 s per registration
    on a 28-day run, growing with every model a long-lived process has loaded), which export's fresh-process
    check has already done on 100 rows."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="example-") as scratch:
        path = Path(scratch) / INPUT_EXAMPLE_FILE
        path.write_text(frame.to_json(orient="split", index=False))
        mlflow.MlflowClient().log_model_artifact(model_id, str(path))


def datasets(validated: ValidationResult) -> dict[str, Any]:
    """The training and evaluation splits as MLflow datasets: where they are, which days, and their digests
    (the training split's row fingerprint, the evaluation files' tree digest), so the model's page says
    what it learnt from and what it was judged on."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from retrainer.core.fingerprint import tree_digest

    feats = validated.features
    out = {}
    for context, folder, days, digest in (
        ("training", validated.files.train, feats.train_range, feats.train_fingerprint),
        ("evaluation", validated.files.eval, feats.eval_range, tree_digest(validated.files.eval)),
    ):
        with warnings.catch_warnings():  # a file:// URI matches two equivalent local sources; MLflow warns
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(Path(folder).resolve().as_uri())
        out[context] = MetaDataset(source, name=f"{context} [{days[0]}, {days[1]})", digest=digest[:32])
    return out


def _link_to_model(model_id: str, validated: ValidationResult, evaluation: EvaluationResult) -> None:
    """The datasets as the run's inputs, and the evaluation metrics on the logged model itself (MLflow 3 shows
    a model's metrics with the dataset they were measured on)."""
    import mlflow

    splits = datasets(validated)
    mlflow.log_input(splits["training"], context="training")
    mlflow.log_input(splits["evaluation"], context="evaluation")
    metrics = {f"new_{k}": float(v) for k, v in evaluation.new.items() if k != "rows"}
    overall = evaluation.slices.get("overall", {}) if evaluation.slices else {}
    if overall.get("new_interval"):
        low, high = overall["new_interval"]
        metrics |= {f"new_{evaluation.headline}_ci_low": low, f"new_{evaluation.headline}_ci_high": high}
    mlflow.log_metrics(metrics, model_id=model_id, dataset=splits["evaluation"])


def _params(training: TrainingResult, cfg: RunConfig) -> dict[str, Any]:
    return {
        **training.hyperparameters,
        "strategy": training.strategy,
        "replicas": training.replicas,
        "launcher": training.launcher,
        "num_workers": training.num_workers,
        "min_gain": cfg.tuning.min_gain,
        "epochs_trained": training.epochs_trained,
        "best_epoch": training.best_epoch,
    }


def _metrics(
    training: TrainingResult, evaluation: EvaluationResult, drift: dict[str, float] | None, curves: bool = True
) -> list[Any]:
    """The run's metrics: the new model's, the champion's and each baseline's on the evaluation days, drift (PSI),
    and unless the chief streamed them during training (``curves`` false), one curve per member and training
    metric (step = epoch, each history row a timestamp of its own, in training order)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    flat = {f"new_{k}": v for k, v in evaluation.new.items()}
    flat |= {f"champion_{k}": v for k, v in (evaluation.champion or {}).items()}
    for baseline, metrics in evaluation.baselines.items():
        flat |= {f"baseline_{baseline}_{k}": v for k, v in metrics.items()}
    flat |= {f"psi_{c}": v for c, v in (drift or {}).items()}
    for piece in (evaluation.slices or {}).get("slices", []):  # the gated slices' headline, both models
        if piece["gated"]:
            key = f"slice_{piece['slice']}_{piece['value']}_{evaluation.headline}".replace("-", "_")
            flat |= {f"{key}_new": piece["new"]} | ({f"{key}_champion": piece["champion"]}
                                                   if piece.get("champion") is not None else {})  # fmt: skip
    out = [Metric(k, float(v), now, 0) for k, v in flat.items()]
    if not curves:
        return out
    for i, h in enumerate(training.history, start=1):  # its own timestamp: equal keys and steps stay two points
        out += [Metric(k, v, now + i, int(h["epoch"])) for k, v in epoch_curves(h).items()]
    return out


def version_description(
    cfg: RunConfig, validated: ValidationResult, evaluation: EvaluationResult, objective: Objective, decision: str,
    promoted: bool,
) -> str:  # fmt: skip
    """The model version's description (Markdown, shown on its page): the data it learnt from and was judged on,
    its metrics beside the champion's and the baselines', and the decision with its reason."""
    feats, h = validated.features, evaluation.headline
    overall = (evaluation.slices or {}).get("overall", {})
    interval = overall.get("new_interval")
    lines = [
        f"**{cfg.run.workload}**, run dated {cfg.run.date} (`{cfg.run.run_id}`).",
        "",
        f"- trained on [{feats.train_range[0]}, {feats.train_range[1]}), {feats.rows.get('train', 0):,} rows; "
        f"evaluated on [{feats.eval_range[0]}, {feats.eval_range[1]}), {evaluation.new.get('rows', 0):,} rows",
        f"- new model: {objective.describe(evaluation.new)}"
        + (f" ({h} 95 % interval [{interval[0]:.4f}, {interval[1]:.4f}])" if interval else ""),
    ]
    if evaluation.champion:
        lines.append(f"- champion v{evaluation.champion_version}: {objective.describe(evaluation.champion)}")
    for name, metrics in evaluation.baselines.items():
        lines.append(f"- baseline {name}: {objective.describe(metrics)}")
    lines += ["", f"**Decision: {'promoted to champion' if promoted else 'not promoted'}**: {decision}"]
    return "\n".join(lines)
