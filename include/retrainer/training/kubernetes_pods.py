"""The ``kubernetes`` launcher: the training argv in ``num_workers`` pods of an Indexed Job with a headless
Service (manifests: :mod:`retrainer.training.kubernetes_jobs`), created through the cncf.kubernetes
provider's hook (the Airflow connection ``RETRAINER_K8S_CONN_ID``). The Job's name is fixed per training
run, so a retry attaches to a Job still running instead of starting a second one, and replaces one that
failed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from retrainer.core.config import RunConfig
from retrainer.core.deployment import deployment
from retrainer.core.errors import WorkersFailed

log = logging.getLogger(__name__)


class KubernetesPods:
    """``num_workers`` pods of an Indexed Job; where and on what from the run's engines and RETRAINER_K8S_*."""

    def __init__(self, poll_seconds: float = 15.0, timeout: float = 6 * 3600) -> None:
        self.poll_seconds, self.timeout = poll_seconds, timeout

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
    def manifests(entrypoint: str, cfg: RunConfig, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        from retrainer.training.kubernetes_jobs import job_manifest, service_manifest

        if entrypoint != "retrainer.training.worker":
            raise ValueError(f"the kubernetes launcher runs the training entry point only, not {entrypoint}")
        placement = KubernetesPods.placement(cfg)
        argv = cfg.to_argv()
        return service_manifest(name, placement), job_manifest(name, placement, argv, cfg.engines.num_workers)

    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from kubernetes.client.exceptions import ApiException

        from retrainer.training.kubernetes_jobs import job_name
        from retrainer.training.worker import current_run_key

        name = job_name(cfg.run.workload, str(cfg.run.date), current_run_key(cfg))
        service, job = self.manifests(entrypoint, cfg, name)
        namespace = service["metadata"]["namespace"]
        hook = KubernetesHook(conn_id=deployment().k8s_conn_id)
        try:
            existing = hook.batch_v1_client.read_namespaced_job(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            existing = None
        if existing is not None and hook.is_job_failed(existing):
            log.info("job %s of an earlier attempt failed: replacing it (training resumes from its checkpoint)", name)
            hook.batch_v1_client.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
            self._wait_gone(hook, name, namespace)
            existing = None
        if existing is None:
            with contextlib.suppress(ApiException):  # kept from an earlier attempt: same name, same spec
                hook.core_v1_client.create_namespaced_service(namespace=namespace, body=service)
            hook.batch_v1_client.create_namespaced_job(namespace=namespace, body=job)
            log.info("created job %s: %d worker pod(s) in %s", name, cfg.engines.num_workers, namespace)
        else:
            log.info("job %s of an earlier attempt is still running: waiting for it, not starting another", name)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            status = hook.get_job_status(job_name=name, namespace=namespace)
            if hook.is_job_failed(status):
                reason = hook.is_job_failed(status)
                raise WorkersFailed(f"job {name} failed ({reason}): kubectl logs -l job-name={name}")
            if hook.is_job_successful(status):
                return
            time.sleep(self.poll_seconds)
        raise WorkersFailed(f"job {name} did not finish within {self.timeout:.0f} s")

    @staticmethod
    def _wait_gone(hook: Any, name: str, namespace: str, timeout: float = 300) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                hook.batch_v1_client.read_namespaced_job(name=name, namespace=namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(2)
        raise WorkersFailed(f"job {name} was not deleted within {timeout:.0f} s")
