"""The ``kubernetes`` launcher: the training argv in ``num_workers`` pods of an Indexed Job with a headless
Service (:mod:`retrainer.training.kubernetes_jobs`). The Job is run by the cncf.kubernetes provider's
``KubernetesJobOperator``, which the train task becomes when ``RETRAINER_LAUNCHER=kubernetes``
(``retrainer_plugins.kubernetes_train_operator``): deferred to the triggerer while the pods run (no worker slot
held), the pods' logs in the task log, the Job deleted when the task is killed. Outside Airflow (the CLI) there
is no operator to hand the Job to, so this launcher refuses to start.
"""

from __future__ import annotations

from typing import Any

from retrainer.core.config import RunConfig
from retrainer.core.deployment import deployment

ENTRYPOINT = "retrainer.training.worker"


class KubernetesPods:
    """``num_workers`` pods of an Indexed Job; where and on what from the run's engines and RETRAINER_K8S_*."""

    @staticmethod
    def placement(cfg: RunConfig) -> Any:
        from retrainer.training.kubernetes_jobs import PodPlacement

        settings = deployment()
        image = settings.k8s_image
        if not image:
            raise ValueError("launcher kubernetes needs RETRAINER_K8S_IMAGE (the project image, see docker/)")
        e = cfg.engines
        return PodPlacement(
            image=image,
            namespace=settings.k8s_namespace,
            accelerator=e.accelerator,
            gpus_per_worker=e.gpus_per_worker,
            tpu_accelerator=settings.tpu_accelerator,
            tpu_topology=settings.tpu_topology,
            data_pvc=settings.k8s_data_pvc or None,
            service_account=settings.k8s_service_account or None,
        )

    @staticmethod
    def job(entrypoint: str, cfg: RunConfig, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The headless Service's manifest and the Job as ``KubernetesJobOperator`` arguments."""
        from retrainer.training.kubernetes_jobs import job_operator_arguments, service_manifest

        if entrypoint != ENTRYPOINT:
            raise ValueError(f"the kubernetes launcher runs the training entry point only, not {entrypoint}")
        placement = KubernetesPods.placement(cfg)
        argv = cfg.to_argv()
        return service_manifest(name, placement), job_operator_arguments(name, placement, argv, cfg.engines.num_workers)

    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        raise ValueError(
            "launcher kubernetes runs under Airflow only: the train task is then the provider's "
            "KubernetesJobOperator (retrainer_plugins.kubernetes_train_operator), which creates and watches the "
            "Job; from the command line use launcher in_process or local_processes"
        )
