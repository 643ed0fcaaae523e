"""The kubernetes launcher's pods, checked against the Kubernetes client's own API models (no cluster
runs here): GPU and TPU variants, TF_CONFIG from the pod indices, and a retry that finds its Job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from retrainer.core.config import RunConfig
from retrainer.training.kubernetes_jobs import INDEX_ENV, TRAINING_PORT, WORKERS_ENV, job_name
from retrainer.training.kubernetes_pods import KubernetesPods
from retrainer.training.launchers import get_launcher
from retrainer.training.strategy import tf_config_from_pod_env


def _as_model(manifest: dict[str, Any], kind: str) -> Any:
    """Build the client's model (which refuses a missing required field or a wrong enum) and serialise it
    back: equal to the manifest only if every key is a field of the API object with a value of its type."""
    from kubernetes.client import ApiClient

    api = ApiClient()
    model = api._ApiClient__deserialize(manifest, kind)  # the client's own JSON -> model path
    assert api.sanitize_for_serialization(model) == manifest, f"{kind} has keys or values the API does not know"
    return model


def _manifests(monkeypatch, **engines: Any) -> tuple[dict[str, Any], dict[str, Any], RunConfig]:
    monkeypatch.setenv("RETRAINER_K8S_IMAGE", "registry.example.com/retrainer:1.0")
    monkeypatch.setenv("RETRAINER_K8S_NAMESPACE", "ml")
    monkeypatch.setenv("RETRAINER_K8S_DATA_PVC", "retrainer-data")
    cfg = RunConfig.build("2013-06-08", data_root="/data", launcher="kubernetes", **engines)
    name = job_name("flight_delay", "2013-06-08", "a" * 64)
    service, job = KubernetesPods.manifests("retrainer.training.worker", cfg, name)
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
    assert RunConfig.from_argv(container.args).to_argv() == cfg.to_argv()  # the pods rebuild this run's config
    assert "s3cret" not in json.dumps(job)  # but not its credentials: the workers use neither MLflow nor Spark
    assert j.spec.template.spec.security_context.run_as_non_root and container.security_context.capabilities.drop
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


def test_placement_needs_an_image_and_gpus_need_a_count(monkeypatch) -> None:
    monkeypatch.delenv("RETRAINER_K8S_IMAGE", raising=False)
    with pytest.raises(ValueError, match="RETRAINER_K8S_IMAGE"):
        KubernetesPods.placement(RunConfig.build("2013-06-08", launcher="kubernetes"))
    from retrainer.core.config import ConfigError

    with pytest.raises(ConfigError, match="accelerator gpu needs gpus_per_worker >= 1"):
        RunConfig.build("2013-06-08", launcher="kubernetes", accelerator="gpu")
    assert isinstance(get_launcher("kubernetes"), KubernetesPods)


class FakeCluster:
    """Stands in for the API server (none runs here): records what the launcher asks of it."""

    def __init__(self, existing: str | None) -> None:
        self.jobs: dict[str, str] = {}  # name -> state
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.existing = existing

    # the BatchV1Api and CoreV1Api calls the launcher makes
    def read_namespaced_job(self, name: str, namespace: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        state = self.jobs.get(name, self.existing if name not in self.deleted else None)
        if state is None:
            raise ApiException(status=404)
        return state

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str) -> None:
        self.deleted.append(name)
        self.jobs.pop(name, None)

    def create_namespaced_job(self, namespace: str, body: dict) -> None:
        _as_model(body, "V1Job")
        self.created.append(body["metadata"]["name"])
        self.jobs[body["metadata"]["name"]] = "running"

    def create_namespaced_service(self, namespace: str, body: dict) -> None:
        _as_model(body, "V1Service")


class FakeHook:
    cluster: FakeCluster

    def __init__(self, conn_id: str) -> None:
        self.batch_v1_client = self.core_v1_client = self.cluster

    def get_job_status(self, job_name: str, namespace: str) -> str:
        return "succeeded"

    @staticmethod
    def is_job_failed(job: str) -> str | bool:
        return "BackoffLimitExceeded" if job == "failed" else False

    @staticmethod
    def is_job_successful(job: str) -> bool:
        return job == "succeeded"


@pytest.mark.parametrize(
    ("existing", "created", "deleted"), [(None, 1, 0), ("running", 0, 0), ("failed", 1, 1), ("succeeded", 0, 0)]
)
def test_a_retry_attaches_to_its_running_or_finished_job_and_replaces_a_failed_one(
    monkeypatch, existing: str | None, created: int, deleted: int
) -> None:
    import airflow.providers.cncf.kubernetes.hooks.kubernetes as hooks

    from retrainer.training import worker

    FakeHook.cluster = FakeCluster(existing)
    monkeypatch.setattr(hooks, "KubernetesHook", FakeHook)
    monkeypatch.setattr(worker, "current_run_key", lambda cfg: "k" * 64)
    monkeypatch.setenv("RETRAINER_K8S_IMAGE", "retrainer:test")
    cfg = RunConfig.build("2013-06-08", data_root="/data", launcher="kubernetes", num_workers=2)
    KubernetesPods(poll_seconds=0).launch("retrainer.training.worker", cfg)
    assert (len(FakeHook.cluster.created), len(FakeHook.cluster.deleted)) == (created, deleted)
    expected = job_name("flight_delay", "2013-06-08", "k" * 64)
    assert FakeHook.cluster.created == [expected] * created  # at most one Job per training run, under its name
