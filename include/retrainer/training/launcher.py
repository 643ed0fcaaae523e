"""Run MultiWorkerMirroredStrategy on N local processes: one ``retrainer train`` per worker.

Each process gets its own TF_CONFIG (set before TensorFlow is imported). If one worker dies the
others fail about 12 s later, so the whole group is stopped and the error reported; a retry of the
task starts the group again and every worker resumes from the chief's last checkpoint.
On a cluster the same TF_CONFIG goes into each pod instead (see ``strategy.tf_config``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any

from retrainer import atomic
from retrainer.config import RunConfig
from retrainer.layout import RunLayout
from retrainer.training.strategy import tf_config

log = logging.getLogger(__name__)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def worker_command(cfg: RunConfig) -> list[str]:
    """``retrainer train`` with this run's settings, forced onto MultiWorkerMirroredStrategy."""
    options = {
        "--date": cfg.run_date.isoformat(),
        "--data-root": cfg.data_root,
        "--workload": cfg.workload,
        "--window-days": cfg.window_days,
        "--eval-days": cfg.eval_days,
        "--epochs": cfg.epochs,
        "--batch-size": cfg.batch_size,
        "--learning-rate": cfg.learning_rate,
        "--hidden-units": cfg.hidden_units,
        "--tracking-uri": cfg.tracking_uri,
        "--strategy": "multi_worker",
        "--local-workers": 0,
    }
    return [sys.executable, "-m", "retrainer.cli", "train", *(str(x) for kv in options.items() for x in kv)]


def train_on_local_workers(
    features: dict[str, Any], cfg: RunConfig, n_workers: int, timeout: float = 3600
) -> dict[str, Any]:
    workers = [f"127.0.0.1:{p}" for p in free_ports(n_workers)]
    layout = RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date)
    log_dir = layout.root / "worker_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    for i in range(n_workers):
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config(workers, i)), "CUDA_VISIBLE_DEVICES": ""}
        # Worker output goes to files: a pipe nobody reads would fill up and block the worker.
        logs.append(log_dir / f"worker-{i}.log")
        with open(logs[-1], "w") as out:
            procs.append(subprocess.Popen(worker_command(cfg), env=env, stdout=out, stderr=subprocess.STDOUT))
    log.info("started %d MultiWorkerMirroredStrategy workers on %s (logs in %s)", n_workers, workers, log_dir)
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        detail = "\n".join(f"--- worker {i} ({logs[i]}) ---\n{logs[i].read_text()[-2000:]}" for i in failed)
        raise RuntimeError(f"{len(failed)} of {n_workers} workers failed or timed out:\n{detail}")
    return atomic.read_json(layout.training_meta)
