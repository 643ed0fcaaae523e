"""Training workers as Kubernetes pods: an Indexed Job of N pods plus the headless Service that gives
each pod a stable DNS name, so TF_CONFIG can name every worker before any of them starts. The Job is
described as the cncf.kubernetes provider's ``KubernetesJobOperator`` takes it (its arguments:
:func:`job_operator_arguments`), and that operator creates it, watches it from the triggerer, streams the pods'
logs and deletes it when the task is killed (``retrainer_plugins.kubernetes_train_operator``).

Pod ``i`` of Job ``J`` in an Indexed Job is reachable as ``J-i.J.<namespace>.svc`` when the pod
template's ``subdomain`` is the Service's name. Each pod gets the worker list in
``RETRAINER_TF_WORKERS`` and its own index in ``JOB_COMPLETION_INDEX`` (set by Kubernetes); the entry
point turns the two into TF_CONFIG (:func:`retrainer.training.strategy.tf_config_from_pod_env`)
before TensorFlow is imported. GPUs are ``nvidia.com/gpu`` limits, TPUs GKE's ``google.com/tpu``
limits plus the TPU node selectors. The tests check the Job the operator builds from these arguments
against the Kubernetes client's own models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

TRAINING_PORT = 2222  # TensorFlow's conventional gRPC port for a worker
WORKERS_ENV = "RETRAINER_TF_WORKERS"
# KubernetesJobOperator puts this before the name it is given (its JOB_NAME_PREFIX; a test checks they agree)
JOB_PREFIX = "job-"
INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclasses.dataclass(frozen=True)
class PodPlacement:
    """Where and on what the training pods run; from the run's engine settings."""

    image: str
    namespace: str = "default"
    accelerator: str = "cpu"  # cpu | gpu | tpu
    gpus_per_worker: int = 0
    tpu_accelerator: str = "tpu-v5-lite-podslice"  # GKE's cloud.google.com/gke-tpu-accelerator
    tpu_topology: str = "2x2"
    tpu_chips_per_worker: int = 4
    data_pvc: str | None = None  # a ReadWriteMany claim holding the data root, mounted at the same path
    service_account: str | None = None
    cpu: str = "2"
    memory: str = "8Gi"
    # Kubernetes stops the Job after this long, even if nobody is left to (the task's own timeout is 2 h)
    deadline_seconds: int = 2 * 3600


def job_name(workload: str, run_date: str, run_key: str) -> str:
    """The Job's name as Kubernetes knows it (the operator's prefix included). Deterministic per training run: a
    retry finds the Job of its earlier attempt instead of starting another. DNS-1123 and short enough that
    ``<name>-<index>`` stays a valid pod hostname."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{workload}-{run_date}".lower()).strip("-")[:36]
    return f"{JOB_PREFIX}train-{slug}-{hashlib.sha256(run_key.encode()).hexdigest()[:8]}"


def worker_hosts(name: str, namespace: str, n: int) -> list[str]:
    return [f"{name}-{i}.{name}.{namespace}.svc:{TRAINING_PORT}" for i in range(n)]


def service_manifest(name: str, placement: PodPlacement) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": placement.namespace, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "clusterIP": "None",  # headless: one DNS record per pod, no load balancing
            "selector": {"job-name": name},
            "ports": [{"name": "grpc", "port": TRAINING_PORT, "targetPort": TRAINING_PORT}],
            "publishNotReadyAddresses": True,  # workers must find each other before they are ready
        },
    }


def _resources(placement: PodPlacement) -> dict[str, Any]:
    limits: dict[str, str] = {"cpu": placement.cpu, "memory": placement.memory}
    if placement.accelerator == "gpu":
        if placement.gpus_per_worker < 1:
            raise ValueError("accelerator gpu needs gpus_per_worker >= 1")
        limits["nvidia.com/gpu"] = str(placement.gpus_per_worker)
    elif placement.accelerator == "tpu":
        limits["google.com/tpu"] = str(placement.tpu_chips_per_worker)
    elif placement.accelerator != "cpu":
        raise ValueError(f"unknown accelerator {placement.accelerator!r}; known: cpu, gpu, tpu")
    return {"requests": dict(limits), "limits": limits}


def job_operator_arguments(name: str, placement: PodPlacement, argv: list[str], num_workers: int) -> dict[str, Any]:
    """The Indexed Job as ``KubernetesJobOperator`` arguments: ``num_workers`` pods, all started at once, none
    restarted by Kubernetes (Airflow's retry resumes the whole group from the last checkpoint: one lost worker
    stalls the others), stopped by Kubernetes after ``deadline_seconds``.

    ``argv`` holds no secret (``RunConfig.to_argv``), and the Job spec gets none either: the training workers
    use neither the registry nor Spark, so the tracking URI and the Spark URL stay with the Airflow task."""
    from kubernetes.client import models as k8s

    env = {WORKERS_ENV: ",".join(worker_hosts(name, placement.namespace, num_workers)),
           "RETRAINER_DATA_ROOT": _arg(argv, "--data-root"), "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    if placement.accelerator == "tpu":
        env["TPU_NAME"] = "local"  # the TPU VM the pod runs on
    resources = _resources(placement)
    arguments: dict[str, Any] = {
        "name": name.removeprefix(JOB_PREFIX),  # the operator adds it back
        "random_name_suffix": False,  # fixed per training run: a retry finds the Job of its earlier attempt
        "namespace": placement.namespace,
        "labels": {"app.kubernetes.io/name": name},
        "image": placement.image,
        "cmds": ["python", "-m", "retrainer.training.worker"],
        "arguments": list(argv),
        "env_vars": [k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        "ports": [k8s.V1ContainerPort(name="grpc", container_port=TRAINING_PORT)],
        "container_resources": k8s.V1ResourceRequirements(requests=resources["requests"], limits=resources["limits"]),
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False, capabilities=k8s.V1Capabilities(drop=["ALL"])
        ),
        # The project image's user (the Airflow image's airflow, uid 50000, group 0); no root, default seccomp.
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=50000,
            run_as_group=0,
            fs_group=0,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        "subdomain": name,  # with the headless Service: pod i is <name>-i.<name>.<ns>.svc
        "completion_mode": "Indexed",
        "completions": num_workers,
        "parallelism": num_workers,
        "backoff_limit": 0,
        "ttl_seconds_after_finished": 3600,
        "active_deadline_seconds": placement.deadline_seconds,
    }
    if placement.accelerator == "tpu":
        arguments["node_selector"] = {
            "cloud.google.com/gke-tpu-accelerator": placement.tpu_accelerator,
            "cloud.google.com/gke-tpu-topology": placement.tpu_topology,
        }
    if placement.accelerator == "gpu":
        arguments["tolerations"] = [k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    if placement.data_pvc:
        claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=placement.data_pvc)
        arguments["volumes"] = [k8s.V1Volume(name="data", persistent_volume_claim=claim)]
        arguments["volume_mounts"] = [k8s.V1VolumeMount(name="data", mount_path=_arg(argv, "--data-root"))]
    if placement.service_account:
        arguments["service_account_name"] = placement.service_account
    return arguments


def _arg(argv: list[str], flag: str) -> str:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        raise ValueError(f"the worker's argv has no {flag}: {argv}") from None
