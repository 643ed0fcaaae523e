"""Stage 3, train: the run's validated training split -> checkpoints and ``training.json``.

Where training runs is the launcher's business (``engines.launcher``: in this process, or N local
worker processes under MultiWorkerMirroredStrategy); every launcher starts the same entry point,
``retrainer.training.worker``, which keys its checkpoints by a run key (training-data fingerprint,
statistics, model-defining parameters, contract, objective): a retry of the same run resumes, a
rerun with different data or parameters starts over.
"""

from __future__ import annotations

import logging
from pathlib import Path

from retrainer.core.config import RunConfig
from retrainer.core.results import TrainingResult, ValidationResult
from retrainer.stages import costed
from retrainer.training.launchers import get_launcher
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)
ENTRYPOINT = "retrainer.training.worker"


class NotValidated(ValueError):
    """Training was asked to read features that are not this run's validated features."""


def check_training_inputs(validated: ValidationResult, run: RunContext | RunConfig) -> ValidationResult:
    """What every launcher's training starts from: the features passed on are this run's validated ones (returns
    the validation result the workers will read). The Kubernetes operator calls this before it creates its Job,
    then reads the result the chief worker wrote (:func:`trained_result`)."""
    layout = RunContext.of(run).layout
    if not isinstance(validated, ValidationResult) or not validated.report.success:
        raise NotValidated(
            f"refusing to train on features that did not pass validation ({type(validated).__name__}); "
            "run the validate stage first"
        )
    on_disk = layout.load(ValidationResult)  # what the workers will read
    if on_disk.features.train_fingerprint != validated.features.train_fingerprint:
        raise NotValidated(
            f"the validated features in {on_disk.features_dir} are not the ones passed to train "
            "(rebuilt since?): rerun validate"
        )
    return on_disk


def trained_result(run: RunContext | RunConfig) -> TrainingResult:
    """The result the workers left in the run's folder (written by the chief worker last)."""
    return RunContext.of(run).layout.load(TrainingResult)


@costed("train")
def train_model(validated: ValidationResult, run: RunContext | RunConfig) -> TrainingResult:
    run = RunContext.of(run)
    check_training_inputs(validated, run)
    run.layout.discard(TrainingResult)  # a failed launch must not leave an earlier result standing
    open_mlflow_run(run)
    get_launcher(run.config.engines.launcher).launch(ENTRYPOINT, run.config)
    return trained_result(run)


def open_mlflow_run(context: RunContext) -> str | None:
    """The training run's MLflow run, opened (or found: a retry) before the workers start and named in the run's
    folder, for the chief to stream each epoch into (:mod:`retrainer.training.epoch_stream`); ``register`` logs
    the rest into it. Returns its id, or None when MLflow cannot be reached now: training does not need it, the
    chief then streams nothing and ``register`` (which does need MLflow) logs the whole history."""
    from retrainer import registry
    from retrainer.core import atomic
    from retrainer.registry.mlflow_run import open_run
    from retrainer.stages.register import RUN_FOLDER_TAG, RUN_KEY_TAG
    from retrainer.training.worker import current_run_key

    cfg, layout = context.config, context.layout
    uri = cfg.engines.tracking_uri
    try:
        layout.mlflow_run.unlink(missing_ok=True)
        own = {RUN_KEY_TAG: current_run_key(cfg),
               RUN_FOLDER_TAG: layout.root.relative_to(Path(cfg.engines.data_root)).as_posix()}  # fmt: skip
        experiment = registry.experiment_id(uri, f"retrainer/{cfg.run.workload}")
        run_id = open_run(uri, experiment, own, f"{cfg.run.workload}-{cfg.run.date}").info.run_id
        atomic.write_json(layout.mlflow_run, {"tracking_uri": uri, "run_id": run_id, "experiment_id": experiment})
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("training curves will not be streamed to MLflow (%s: %s); register logs them", type(exc).__name__,
                    exc)  # fmt: skip
        return None
    return run_id
