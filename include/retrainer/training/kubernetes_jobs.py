"""Training workers as Kubernetes pods: an Indexed Job of N pods plus the headless Service that gives
each pod a stable DNS name, so TF_CONFIG can name every worker before any of them starts.

Pod ``i`` of Job ``J`` in an Indexed Job is reachable as ``J-i.J.<namespace>.svc`` when the pod
template's ``subdomain`` is the Service's name. Each pod gets the worker list in
``RETRAINER_TF_WORKERS`` and its own index in ``JOB_COMPLETION_INDEX`` (set by Kubernetes); the entry
point turns the two into TF_CONFIG (:func:`retrainer.training.strategy.tf_config_from_pod_env`)
before TensorFlow is imported. GPUs are ``nvidia.com/gpu`` limits, TPUs GKE's ``google.com/tpu``
limits plus the TPU node selectors. The specs are plain dicts shaped like the API's objects; the
tests check them against the Kubernetes client's own models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

TRAINING_PORT = 2222  # TensorFlow's conventional gRPC port for a worker
WORKERS_ENV = "RETRAINER_TF_WORKERS"
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


def job_name(workload: str, run_date: str, run_key: str) -> str:
    """Deterministic per training run: a retry finds the Job of its earlier attempt instead of starting another.
    DNS-1123 and short enough that ``<name>-<index>`` stays a valid pod hostname."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{workload}-{run_date}".lower()).strip("-")[:40]
    return f"train-{slug}-{hashlib.sha256(run_key.encode()).hexdigest()[:8]}"


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


def job_manifest(name: str, placement: PodPlacement, argv: list[str], num_workers: int) -> dict[str, Any]:
    """The Indexed Job: ``num_workers`` pods, all started at once, none restarted by Kubernetes (Airflow's
    retry resumes the whole group from the last checkpoint: one lost worker stalls the others).

    ``argv`` holds no secret (``RunConfig.to_argv``), and the Job spec gets none either: the training workers
    use neither the registry nor Spark, so the tracking URI and the Spark URL stay with the Airflow task."""
    env = [
        {"name": WORKERS_ENV, "value": ",".join(worker_hosts(name, placement.namespace, num_workers))},
        {"name": "RETRAINER_DATA_ROOT", "value": _arg(argv, "--data-root")},
        {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
    ]
    if placement.accelerator == "tpu":
        env.append({"name": "TPU_NAME", "value": "local"})  # the TPU VM the pod runs on
    container: dict[str, Any] = {
        "name": "worker",
        "image": placement.image,
        "command": ["python", "-m", "retrainer.training.worker"],
        "args": list(argv),
        "env": env,
        "ports": [{"name": "grpc", "containerPort": TRAINING_PORT}],
        "resources": _resources(placement),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod: dict[str, Any] = {
        "subdomain": name,  # with the headless Service: pod i is <name>-i.<name>.<ns>.svc
        "restartPolicy": "Never",
        "containers": [container],
        # The project image's user (the Airflow image's airflow, uid 50000, group 0); no root, default seccomp.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 50000,
            "runAsGroup": 0,
            "fsGroup": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if placement.accelerator == "tpu":
        pod["nodeSelector"] = {
            "cloud.google.com/gke-tpu-accelerator": placement.tpu_accelerator,
            "cloud.google.com/gke-tpu-topology": placement.tpu_topology,
        }
    if placement.accelerator == "gpu":
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if placement.data_pvc:
        root = _arg(argv, "--data-root")
        pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": placement.data_pvc}}]
        container["volumeMounts"] = [{"name": "data", "mountPath": root}]
    if placement.service_account:
        pod["serviceAccountName"] = placement.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": placement.namespace, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "completionMode": "Indexed",
            "completions": num_workers,
            "parallelism": num_workers,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}}, "spec": pod},
        },
    }


def _arg(argv: list[str], flag: str) -> str:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        raise ValueError(f"the worker's argv has no {flag}: {argv}") from None
