"""Where a stage's work runs: a :class:`Launcher`, chosen by config (``engines.launcher``).

A launcher starts an *entry point* (a module with ``run(cfg)`` and ``main(argv)``) for a run:

- ``in_process``: calls ``run(cfg)`` in this process (the default; one worker);
- ``local_processes``: ``engines.num_workers`` processes ``python -m <entry point> <argv>`` on this
  machine under MultiWorkerMirroredStrategy (:mod:`retrainer.training.local_processes`);
- ``kubernetes``: the same argv in ``num_workers`` pods of an Indexed Job, through the cncf.kubernetes
  provider's hook (:mod:`retrainer.training.kubernetes_pods`).

Stages do not know which one runs them.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from retrainer.core.config import RunConfig
from retrainer.training.kubernetes_pods import KubernetesPods
from retrainer.training.local_processes import LocalProcesses

GPU_POOL = "gpu"  # the Airflow pool GPU training takes a slot of (one slot per GPU worker group you can run)


class Launcher(Protocol):
    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        """Run ``entrypoint`` for this run; return when every worker succeeded, raise otherwise."""


class InProcess:
    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        importlib.import_module(entrypoint).run(cfg)


LAUNCHERS: dict[str, type] = {
    "in_process": InProcess,
    "local_processes": LocalProcesses,
    "kubernetes": KubernetesPods,
}


def get_launcher(name: str) -> Launcher:
    try:
        return LAUNCHERS[name]()
    except KeyError:
        raise ValueError(f"unknown launcher {name!r}; known: {sorted(LAUNCHERS)}") from None
