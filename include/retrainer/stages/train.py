"""Stage 3, train: the run's validated training split -> checkpoints and ``training.json``.

Where training runs is the launcher's business (``engines.launcher``: in this process, or N local
worker processes under MultiWorkerMirroredStrategy); every launcher starts the same entry point,
``retrainer.training.worker``, which keys its checkpoints by a run key (training-data fingerprint,
statistics, model-defining parameters, contract, objective): a retry of the same run resumes, a
rerun with different data or parameters starts over.
"""

from __future__ import annotations

import logging

from retrainer.core.config import RunConfig
from retrainer.core.results import TrainingResult, ValidationResult
from retrainer.stages import costed
from retrainer.training.launchers import get_launcher
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)
ENTRYPOINT = "retrainer.training.worker"


class NotValidated(ValueError):
    """Training was asked to read features that are not this run's validated features."""


@costed("train")
def train_model(validated: ValidationResult, run: RunContext | RunConfig) -> TrainingResult:
    run = RunContext.of(run)
    cfg = run.config
    layout = run.layout
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
    layout.discard(TrainingResult)  # a failed launch must not leave an earlier result standing
    get_launcher(cfg.engines.launcher).launch(ENTRYPOINT, cfg)
    return layout.load(TrainingResult)
