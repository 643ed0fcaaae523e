"""The train task as an operator: where the workers run (launcher), on what (accelerator, GPUs per worker)
and how many, as arguments a DAG author sets per DAG; the run's tuning comes from its params as for every
other task.

GPU training takes a slot of the ``gpu`` pool (created with the promotion pool by ``make airflow-db`` and
the server stack; size it to the GPU workers you have) and goes to the training Celery queue
(``RETRAINER_TRAINING_QUEUE``). A retry resumes from the last epoch's checkpoint (the training loop's),
and never starts a second worker group beside a running one (the launchers'). Importing this module
imports no TensorFlow: the DAG file stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class TensorFlowTrainOperator(BaseOperator):
    """Train the run's model on its validated features (the ``validate`` task's receipt, an XComArg)."""

    template_fields: Sequence[str] = ("validated",)
    ui_color = "#ff6f00"  # TensorFlow orange

    def __init__(
        self,
        *,
        workload: str,
        validated: Any,
        launcher: str | None = None,
        accelerator: str | None = None,
        num_workers: int | None = None,
        gpus_per_worker: int | None = None,
        **kwargs: Any,
    ) -> None:
        from retrainer.core.config import engine_setting
        from retrainer.core.deployment import deployment
        from retrainer.training.launchers import GPU_POOL

        gpu = (accelerator or engine_setting("accelerator")) == "gpu"
        if gpu:  # the DAG author's pool or queue still wins; the queue is the one the project's DAG uses
            kwargs.setdefault("pool", GPU_POOL)
            kwargs.setdefault("queue", deployment().training_queue)
        super().__init__(**kwargs)
        self.workload = workload
        self.validated = validated
        # None: the deployment's setting (RETRAINER_LAUNCHER, ... in the workers' environment)
        self.placement = {
            "launcher": launcher,
            "accelerator": accelerator,
            "num_workers": num_workers,
            "gpus_per_worker": gpus_per_worker,
        }

    def execute(self, context: Any) -> dict[str, Any]:
        from retrainer.core.results import ValidationResult
        from retrainer.runners.airflow_adapter import hand_on, received, run_context
        from retrainer.stages.train import train_model
        from retrainer_plugins.failures import no_retry_on_bad_data

        with no_retry_on_bad_data():
            run = run_context(context, self.workload)
            chosen = {k: v for k, v in self.placement.items() if v is not None}
            if chosen:
                run = run.replace(**chosen)
            cfg = run.config
            self.log.info(
                "training on %s: launcher %s, %d worker(s), %d GPU(s) each, strategy %s, attempt %s",
                cfg.engines.accelerator, cfg.engines.launcher, cfg.engines.num_workers,
                cfg.engines.gpus_per_worker, cfg.engines.strategy, context["ti"].try_number,
            )  # fmt: skip
            return hand_on(train_model(received(self.validated, ValidationResult), run), run)
