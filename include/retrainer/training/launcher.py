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
    return [
        sys.executable,
        "-m",
        "retrainer.cli",
        "train",
        "--date",
        cfg.run_date.isoformat(),
        "--data-root",
        cfg.data_root,
        "--workload",
        cfg.workload,
        "--window-days",
        str(cfg.window_days),
        "--eval-days",
        str(cfg.eval_days),
        "--epochs",
        str(cfg.epochs),
        "--batch-size",
        str(cfg.batch_size),
        "--learning-rate",
        str(cfg.learning_rate),
        "--hidden-units",
        str(cfg.hidden_units),
        "--strategy",
        "multi_worker",
    ]


def train_on_local_workers(
    features: dict[str, Any], cfg: RunConfig, n_workers: int, timeout: float = 3600
) -> dict[str, Any]:
    workers = [f"127.0.0.1:{p}" for p in free_ports(n_workers)]
    procs = []
    for i in range(n_workers):
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config(workers, i)), "CUDA_VISIBLE_DEVICES": ""}
        procs.append(
            subprocess.Popen(worker_command(cfg), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )
    log.info("started %d MultiWorkerMirroredStrategy workers on %s", n_workers, workers)
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        errors = {i: p.stderr.read()[-2000:] for i, p in enumerate(procs) if p.wait() != 0}
    if errors:
        detail = "\n".join(f"--- worker {i} ---\n{tail}" for i, tail in errors.items())
        raise RuntimeError(f"{len(errors)} of {n_workers} workers failed:\n{detail}")
    return atomic.read_json(RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date).training_meta)
