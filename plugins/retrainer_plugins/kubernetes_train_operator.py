"""The train task on Kubernetes: the cncf.kubernetes provider's ``KubernetesJobOperator`` running the training
run's Indexed Job (its pods and headless Service: :mod:`retrainer.training.kubernetes_jobs`).

The provider does the Kubernetes work: it creates the Job, hands the wait to the triggerer (``deferrable``: no
worker slot is held while the pods train), writes the pods' logs into the task log, and deletes the Job when the
task is killed. What this subclass adds is the run: the Job's arguments come from the run's config (built when
the task starts, from its params), and a retry finds the Job of its earlier attempt by its fixed name: a
succeeded one is reused (its result is in the run's folder), a running one is watched again instead of started
twice, a failed one is replaced (training resumes from its checkpoint). Kubernetes itself stops the Job after
``PodPlacement.deadline_seconds``, whoever is left to watch it. Importing this module imports no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator


class TensorFlowKubernetesTrainOperator(KubernetesJobOperator):
    """Train the run's model in Kubernetes pods on its validated features (``validate``'s receipt, an XComArg)."""

    template_fields: Sequence[str] = (*KubernetesJobOperator.template_fields, "validated")
    ui_color = "#ff6f00"

    def __init__(
        self,
        *,
        workload: str,
        validated: Any,
        accelerator: str | None = None,
        num_workers: int | None = None,
        gpus_per_worker: int | None = None,
        **kwargs: Any,
    ) -> None:
        from retrainer.core.config import engine_setting
        from retrainer.core.deployment import deployment
        from retrainer.training.launchers import GPU_POOL

        if (accelerator or engine_setting("accelerator")) == "gpu":
            kwargs.setdefault("pool", GPU_POOL)
        kwargs.setdefault("kubernetes_conn_id", deployment().k8s_conn_id)
        kwargs.setdefault("job_poll_interval", 15)
        super().__init__(wait_until_job_complete=True, deferrable=True, get_logs=True, **kwargs)
        self.workload = workload
        self.validated = validated
        self.placement = {"launcher": "kubernetes", "accelerator": accelerator, "num_workers": num_workers,
                          "gpus_per_worker": gpus_per_worker}  # fmt: skip

    def _run(self, context: Any) -> Any:
        from retrainer.runners.airflow_adapter import run_context

        run = run_context(context, self.workload)
        return run.replace(**{k: v for k, v in self.placement.items() if v is not None})

    def execute(self, context: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        from retrainer.core.results import TrainingResult, ValidationResult
        from retrainer.runners.airflow_adapter import received
        from retrainer.stages.train import check_training_inputs, open_mlflow_run
        from retrainer.training.kubernetes_jobs import job_name
        from retrainer.training.kubernetes_pods import ENTRYPOINT, KubernetesPods
        from retrainer.training.worker import current_run_key
        from retrainer_plugins.failures import no_retry_on_bad_data

        run = self._run(context)
        with no_retry_on_bad_data():
            check_training_inputs(received(self.validated, ValidationResult), run)
        open_mlflow_run(run)  # the chief pod streams its epochs into it (the run folder is on the shared claim)
        cfg = run.config
        name = job_name(cfg.run.workload, str(cfg.run.date), current_run_key(cfg))
        service, arguments = KubernetesPods.job(ENTRYPOINT, cfg, name)
        for key, value in arguments.items():  # the run's Job: what the provider builds and creates
            setattr(self, key, value)
        namespace = arguments["namespace"]
        try:
            existing = self.job_client.read_namespaced_job(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            existing = None
        if existing is not None and self.hook.is_job_successful(existing):
            self.log.info("job %s of an earlier attempt succeeded: using its result", name)
            return self._finish(context)
        if existing is not None and self.hook.is_job_failed(existing):
            self.log.info("job %s of an earlier attempt failed: replacing it (training resumes from its checkpoint)",
                          name)  # fmt: skip
            self.job_client.delete_namespaced_job(name=name, namespace=namespace, propagation_policy="Foreground")
            self._wait_gone(name, namespace)
            existing = None
        if existing is not None:
            self.log.info("job %s of an earlier attempt is still running: watching it, not starting another", name)
            self.job = existing
            self.build_job_request_obj(context)  # sets pod_request_obj: the labels and namespace that find its pods
            self.pods = self.get_pods(pod_request_obj=self.pod_request_obj, context=context)
            self.execute_deferrable()  # raises TaskDeferred
        run.layout.discard(TrainingResult)  # a failed Job must not leave an earlier result standing
        try:
            self.client.create_namespaced_service(namespace=namespace, body=service)
        except ApiException as exc:
            if exc.status != 409:  # kept from an earlier attempt: same name, same spec
                raise
        self.log.info(
            "training on %s: job %s, %d pod(s) in %s, %d GPU(s) each",
            cfg.engines.accelerator, name, cfg.engines.num_workers, namespace, cfg.engines.gpus_per_worker,
        )  # fmt: skip
        return super().execute(context)  # creates the Job and defers to the triggerer

    def execute_complete(self, context: Any, event: dict[str, Any], **kwargs: Any) -> Any:
        super().execute_complete(context, event, **kwargs)  # raises if the Job failed; writes the pods' logs
        return self._finish(context)

    def _finish(self, context: Any) -> Any:
        from retrainer.runners.airflow_adapter import hand_on
        from retrainer.stages.train import trained_result

        run = self._run(context)
        return hand_on(trained_result(run), run)

    def _wait_gone(self, name: str, namespace: str, timeout: float = 300) -> None:
        import time

        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.job_client.read_namespaced_job(name=name, namespace=namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(2)
        raise TimeoutError(f"job {name} was not deleted within {timeout:.0f} s")
