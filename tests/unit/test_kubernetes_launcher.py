"""The train task on Kubernetes: the Job the provider's ``KubernetesJobOperator`` builds from the launcher's
arguments, checked against the Kubernetes client's own API models (no cluster runs here): GPU and TPU variants,
TF_CONFIG from the pod indices; and the operator's retry and kill paths against a fake API server."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from retrainer.core.config import RunConfig
from retrainer.training.kubernetes_jobs import INDEX_ENV, JOB_PREFIX, TRAINING_PORT, WORKERS_ENV, job_name
from retrainer.training.kubernetes_pods import ENTRYPOINT, KubernetesPods
from retrainer.training.launchers import get_launcher
from retrainer.training.strategy import tf_config_from_pod_env

NAME = job_name("flight_delay", "2013-06-08", "a" * 64)


def _as_model(manifest: dict[str, Any], kind: str) -> Any:
    """Build the client's model (which refuses a missing required field or a wrong enum) and serialise it
    back: equal to the manifest only if every key is a field of the API object with a value of its type."""
    from kubernetes.client import ApiClient

    api = ApiClient()
    model = api._ApiClient__deserialize(manifest, kind)  # the client's own JSON -> model path
    assert api.sanitize_for_serialization(model) == manifest, f"{kind} has keys or values the API does not know"
    return model


def _context(try_number: int = 1) -> dict[str, Any]:
    ti = types.SimpleNamespace(dag_id="flight_delay_retrain", task_id="train", map_index=-1, try_number=try_number,
                               pushed={})  # fmt: skip
    ti.xcom_push = lambda key, value: ti.pushed.__setitem__(key, value)
    return {"ti": ti, "run_id": "scheduled__2013-06-08", "dag": types.SimpleNamespace()}


def _operator(arguments: dict[str, Any]) -> Any:
    from retrainer_plugins.kubernetes_train_operator import TensorFlowKubernetesTrainOperator

    op = TensorFlowKubernetesTrainOperator(task_id="train", workload="flight_delay", validated=None)
    for key, value in arguments.items():
        setattr(op, key, value)
    return op


def _manifests(monkeypatch, **engines: Any) -> tuple[dict[str, Any], dict[str, Any], RunConfig]:
    """The headless Service and the Job the provider's operator builds (as the API would receive them)."""
    from kubernetes.client import ApiClient

    monkeypatch.setenv("RETRAINER_K8S_IMAGE", "registry.example.com/retrainer:1.0")
    monkeypatch.setenv("RETRAINER_K8S_NAMESPACE", "ml")
    monkeypatch.setenv("RETRAINER_K8S_DATA_PVC", "retrainer-data")
    cfg = RunConfig.build("2013-06-08", data_root="/data", launcher="kubernetes", **engines)
    service, arguments = KubernetesPods.job(ENTRYPOINT, cfg, NAME)
    op = _operator(arguments)
    op.hook = types.SimpleNamespace(is_in_cluster=False, get_namespace=lambda: None)  # no cluster to ask
    op.name = op._set_name(op.name)  # as the operator's execute does first
    job = ApiClient().sanitize_for_serialization(op.build_job_request_obj(_context()))
    return service, job, cfg


def test_gpu_workers_are_an_indexed_job_behind_a_headless_service(monkeypatch) -> None:
    service, job, cfg = _manifests(
        monkeypatch, num_workers=3, accelerator="gpu", gpus_per_worker=2, tracking_uri="https://ml:s3cret@mlflow"
    )
    svc, j = _as_model(service, "V1Service"), _as_model(job, "V1Job")
    name = j.metadata.name
    assert svc.spec.cluster_ip == "None" and svc.spec.selector == {"job-name": name}
    assert (j.spec.completion_mode, j.spec.completions, j.spec.parallelism) == ("Indexed", 3, 3)
    assert j.spec.backoff_limit == 0 and j.spec.template.spec.restart_policy == "Never"
    assert j.spec.template.spec.subdomain == svc.metadata.name == name
    (container,) = j.spec.template.spec.containers
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    assert container.command == ["python", "-m", "retrainer.training.worker"]
    assert name == NAME and j.spec.active_deadline_seconds == 2 * 3600 and j.spec.ttl_seconds_after_finished == 3600
    assert RunConfig.from_argv(container.args).to_argv() == cfg.to_argv()  # the pods rebuild this run's config
    assert "s3cret" not in json.dumps(job)  # but not its credentials: the workers use neither MLflow nor Spark
    assert j.spec.template.spec.security_context.run_as_non_root and container.security_context.capabilities.drop
    assert not container.security_context.allow_privilege_escalation
    assert j.spec.template.spec.tolerations[0].key == "nvidia.com/gpu"
    assert container.volume_mounts[0].mount_path == "/data"
    assert j.spec.template.spec.volumes[0].persistent_volume_claim.claim_name == "retrainer-data"

    # What each pod's entry point makes of its environment (Kubernetes sets the completion index).
    env = {e.name: e.value for e in container.env}
    hosts = env[WORKERS_ENV].split(",")
    assert hosts == [f"{name}-{i}.{name}.ml.svc:{TRAINING_PORT}" for i in range(3)]
    for i in range(3):
        tf_config = tf_config_from_pod_env({**env, INDEX_ENV: str(i)})
        assert tf_config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
    assert tf_config_from_pod_env({}) is None


def test_tpu_workers_ask_for_tpu_chips_on_tpu_nodes(monkeypatch) -> None:
    monkeypatch.setenv("RETRAINER_TPU_TOPOLOGY", "2x4")
    _, job, _ = _manifests(monkeypatch, accelerator="tpu", strategy="tpu")
    j = _as_model(job, "V1Job")
    spec = j.spec.template.spec
    assert spec.node_selector == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "2x4",
    }
    (container,) = spec.containers
    assert container.resources.limits["google.com/tpu"] == "4" and "nvidia.com/gpu" not in container.resources.limits
    assert {e.name: e.value for e in container.env}["TPU_NAME"] == "local"


def test_cpu_workers_ask_for_no_accelerator(monkeypatch) -> None:
    _, job, _ = _manifests(monkeypatch, num_workers=2)
    limits = _as_model(job, "V1Job").spec.template.spec.containers[0].resources.limits
    assert set(limits) == {"cpu", "memory"}


def test_a_job_name_is_fixed_per_training_run_and_a_valid_hostname_prefix() -> None:
    import re

    a = job_name("arrival_delay_minutes", "2013-12-31", "k1")
    assert (
        a
        == job_name("arrival_delay_minutes", "2013-12-31", "k1")
        != job_name("arrival_delay_minutes", "2013-12-31", "k2")
    )
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", a) and len(f"{a}-63") <= 63
    from airflow.providers.cncf.kubernetes.operators.job import JOB_NAME_PREFIX

    assert a.startswith(JOB_PREFIX) and JOB_PREFIX == JOB_NAME_PREFIX  # the name the provider gives the Job


def test_placement_needs_an_image_and_gpus_need_a_count(monkeypatch) -> None:
    monkeypatch.delenv("RETRAINER_K8S_IMAGE", raising=False)
    with pytest.raises(ValueError, match="RETRAINER_K8S_IMAGE"):
        KubernetesPods.placement(RunConfig.build("2013-06-08", launcher="kubernetes"))
    from retrainer.core.config import ConfigError

    with pytest.raises(ConfigError, match="accelerator gpu needs gpus_per_worker >= 1"):
        RunConfig.build("2013-06-08", launcher="kubernetes", accelerator="gpu")
    assert isinstance(get_launcher("kubernetes"), KubernetesPods)
    with pytest.raises(ValueError, match="runs under Airflow only.*KubernetesJobOperator"):  # the CLI cannot
        get_launcher("kubernetes").launch(ENTRYPOINT, RunConfig.build("2013-06-08", launcher="kubernetes"))


def _job(state: str | None) -> Any:
    from kubernetes.client import models as k8s

    conditions = {"succeeded": [k8s.V1JobCondition(type="Complete", status="True")],
                  "failed": [k8s.V1JobCondition(type="Failed", status="True", reason="BackoffLimitExceeded")],
                  "running": []}[state]  # fmt: skip
    return k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name=NAME, namespace="ml"), status=k8s.V1JobStatus(conditions=conditions)
    )


class FakeApi:
    """Stands in for the API server (none runs here): the BatchV1Api, CoreV1Api and hook calls the provider's
    operator and ours make, recorded; what is created is checked against the client's models."""

    def __init__(self, existing: str | None) -> None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        self.state = existing
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.services: list[str] = []
        self.batch_v1_client = self.core_v1_client = self
        self.is_in_cluster = False
        self.get_namespace = lambda: None
        self.is_job_failed, self.is_job_successful = KubernetesHook.is_job_failed, KubernetesHook.is_job_successful

    def read_namespaced_job(self, name: str, namespace: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        if self.state is None:
            raise ApiException(status=404)
        return _job(self.state)

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str, **kwargs: Any) -> None:
        self.deleted.append(name)
        self.state = None

    def create_job(self, job: Any) -> Any:
        from kubernetes.client import ApiClient

        _as_model(ApiClient().sanitize_for_serialization(job), "V1Job")
        self.created.append(job.metadata.name)
        self.state = "running"
        return job

    def create_namespaced_service(self, namespace: str, body: dict) -> None:
        _as_model(body, "V1Service")
        self.services.append(body["metadata"]["name"])

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        from kubernetes.client import models as k8s

        assert "dag_id=flight_delay_retrain" in label_selector and "try_number" not in label_selector
        meta = [k8s.V1ObjectMeta(name=f"{NAME}-{i}-x", namespace=namespace, labels={"try_number": "1"}) for i in (0, 1)]
        return types.SimpleNamespace(items=[k8s.V1Pod(metadata=m) for m in meta])

    def delete_namespaced_pod(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def on_fake_api(monkeypatch):
    """The operator on a fake API, for one run whose training inputs are taken as checked (the stage's own tests
    check them) and whose result, once the Job succeeded, is a marker."""
    from retrainer.runners import airflow_adapter
    from retrainer.stages import train
    from retrainer.training import worker
    from retrainer_plugins import kubernetes_train_operator as module

    monkeypatch.setenv("RETRAINER_K8S_IMAGE", "retrainer:test")
    monkeypatch.setenv("RETRAINER_K8S_NAMESPACE", "ml")
    cfg = RunConfig.build("2013-06-08", data_root="/data", launcher="kubernetes", num_workers=2)
    discarded: list[bool] = []
    run = types.SimpleNamespace(config=cfg, layout=types.SimpleNamespace(discard=lambda kind: discarded.append(True)))
    monkeypatch.setattr(module.TensorFlowKubernetesTrainOperator, "_run", lambda self, context: run)
    monkeypatch.setattr(train, "check_training_inputs", lambda validated, r: validated)
    monkeypatch.setattr(train, "trained_result", lambda r: "the training result")
    monkeypatch.setattr(airflow_adapter, "received", lambda value, kind: value)
    monkeypatch.setattr(airflow_adapter, "hand_on", lambda result, r: {"handed on": result})
    monkeypatch.setattr(worker, "current_run_key", lambda c: "a" * 64)

    def make(existing: str | None) -> tuple[Any, FakeApi]:
        op = module.TensorFlowKubernetesTrainOperator(task_id="train", workload="flight_delay", validated=None)
        api = FakeApi(existing)
        op.hook = api  # the provider's operator reaches the cluster through its hook (cached properties)
        op._wait_gone = lambda name, namespace: None
        return op, api

    make.discarded = discarded
    return make


@pytest.mark.parametrize(("existing", "created", "deleted"), [(None, 1, 0), ("running", 0, 0), ("failed", 1, 1)])
def test_a_retry_watches_its_running_job_and_replaces_a_failed_one(on_fake_api, existing, created, deleted) -> None:
    from airflow.providers.cncf.kubernetes.triggers.job import KubernetesJobTrigger
    from airflow.sdk.exceptions import TaskDeferred

    op, api = on_fake_api(existing)
    with pytest.raises(TaskDeferred) as deferred:  # the wait is the triggerer's: no worker slot held
        op.execute(_context(try_number=2))
    trigger = deferred.value.trigger
    assert isinstance(trigger, KubernetesJobTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.job_name == NAME and trigger.job_namespace == "ml" and trigger.get_logs
    assert trigger.pod_names == [f"{NAME}-0-x", f"{NAME}-1-x"]
    assert (api.created, len(api.deleted)) == ([NAME] * created, deleted)  # at most one Job per training run
    assert api.services == [NAME] * created and len(on_fake_api.discarded) == created


def test_a_retry_after_the_job_succeeded_uses_its_result(on_fake_api) -> None:
    op, api = on_fake_api("succeeded")
    assert op.execute(_context(try_number=2)) == {"handed on": "the training result"}
    assert api.created == [] and api.deleted == [] and on_fake_api.discarded == []


def test_the_job_is_deleted_when_the_task_is_killed_and_a_failed_job_fails_the_task(on_fake_api) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    op, api = on_fake_api(None)
    with pytest.raises(TaskDeferred):
        op.execute(_context())
    op.on_kill()
    assert api.deleted == [NAME]

    event = {"status": "error", "message": "Job has reached the specified backoff limit", "job": {},
             "pod_names": [], "pod_namespace": "ml"}  # fmt: skip
    with pytest.raises(Exception, match="backoff limit"):
        op.execute_complete(_context(), event)
    done = {"status": "success", "message": "Job completed", "job": {}, "pod_names": [], "pod_namespace": "ml"}
    assert op.execute_complete(_context(), done) == {"handed on": "the training result"}
