"""Choosing a tf.distribute strategy, and who is the chief.

TF_CONFIG must be in the environment before TensorFlow is imported; :func:`tf_config` builds it
for launchers (a local process group here, pods on a cluster) so the shape is tested in one place.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def tf_config(workers: list[str], index: int, task_type: str = "worker") -> dict[str, Any]:
    """The TF_CONFIG for worker ``index`` of a MultiWorkerMirroredStrategy cluster (worker 0 is chief)."""
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} outside cluster of {len(workers)}")
    return {"cluster": {"worker": list(workers)}, "task": {"type": task_type, "index": index}}


def tf_config_from_pod_env(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """TF_CONFIG for a pod of an Indexed Job (:mod:`retrainer.training.kubernetes_jobs`): the worker list the launcher
    wrote and the index Kubernetes gave the pod; None outside such a pod."""
    from retrainer.training.kubernetes_jobs import INDEX_ENV, WORKERS_ENV

    env = os.environ if env is None else env
    if not env.get(WORKERS_ENV) or env.get(INDEX_ENV) is None:
        return None
    return tf_config(env[WORKERS_ENV].split(","), int(env[INDEX_ENV]))


def cluster_from_env() -> dict[str, Any] | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    cfg = json.loads(raw)
    if "cluster" not in cfg or "task" not in cfg:
        raise ValueError(f"TF_CONFIG needs 'cluster' and 'task': {raw}")
    return cfg


def worker_index_from_env() -> str:
    """``<task type>-<index>`` of this process in TF_CONFIG (``worker-0`` without one)."""
    cfg = cluster_from_env()
    if cfg is None:
        return "worker-0"
    return f"{cfg['task']['type']}-{int(cfg['task'].get('index', 0))}"


def is_chief_from_env() -> bool:
    """Chief = the 'chief' task, or worker 0 when the cluster has no chief; a single process is its own chief."""
    cfg = cluster_from_env()
    if cfg is None:
        return True
    task_type, index = cfg["task"]["type"], int(cfg["task"].get("index", 0))
    if "chief" in cfg["cluster"]:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def choose_strategy(name: str) -> Any:
    """``auto``: multi-worker when TF_CONFIG names more than one task, mirrored when GPUs are visible,
    else the default strategy. Explicit names force a strategy (``tpu`` reads TPU_NAME)."""
    import tensorflow as tf

    if name == "auto":
        cluster = cluster_from_env()
        n_tasks = sum(len(v) for v in cluster["cluster"].values()) if cluster else 1
        if n_tasks > 1:
            name = "multi_worker"
        elif tf.config.list_physical_devices("GPU"):
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise ValueError(f"unknown strategy {name!r}")
    log.info("strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def dtype_policy(precision: str, strategy: Any) -> str:
    """``auto``: mixed_bfloat16 under TPUStrategy, mixed_float16 when the replicas are GPUs, else float32
    (mixed_float16 runs on CPUs but many times slower)."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"


def apply_compute_settings(precision: str, xla: str, strategy: Any) -> str:
    """Set Keras' global dtype policy and TensorFlow's XLA auto-clustering before the model is built;
    returns the policy's name. Auto-clustering compiles what XLA can and leaves string lookups alone."""
    import keras
    import tensorflow as tf

    policy = dtype_policy(precision, strategy)
    keras.mixed_precision.set_global_policy(policy)
    tf.config.optimizer.set_jit("autoclustering" if xla == "on" else False)
    log.info("dtype policy %s, XLA %s", policy, xla)
    return policy
