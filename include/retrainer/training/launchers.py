"""Where a stage's work runs: a :class:`Launcher`, chosen by config (``engines.launcher``).

A launcher starts an *entry point* (a module with ``run(cfg)`` and ``main(argv)``) for a run:

- ``in_process``: calls ``run(cfg)`` in this process (the default; one worker);
- ``local_processes``: starts ``engines.num_workers`` processes ``python -m <entry point> <argv>``,
  each with its own TF_CONFIG on free loopback ports (MultiWorkerMirroredStrategy), streams each
  worker's output into this process's log with a ``[worker i]`` prefix (and into
  ``worker_logs/``), and stops every worker if one fails, the time limit passes or this process
  is interrupted or dies. A lock in the run folder keeps a second attempt from starting workers
  beside a running group, and workers an earlier attempt left behind are stopped first;
- ``kubernetes``: the same argv in ``num_workers`` pods of an Indexed Job with a headless Service
  (:mod:`retrainer.training.kubernetes_jobs`), created through the cncf.kubernetes provider's hook. The Job's
  name is fixed per training run, so a retry attaches to a Job still running instead of starting a
  second one, and replaces one that failed.

Stages do not know which one runs them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO, Any, Protocol

from retrainer.core.config import RunConfig
from retrainer.core.deployment import deployment
from retrainer.core.layout import RunLayout
from retrainer.training.strategy import tf_config

log = logging.getLogger(__name__)
GPU_POOL = "gpu"  # the Airflow pool GPU training takes a slot of (one slot per GPU worker group you can run)


class WorkersFailed(RuntimeError):
    """One or more worker processes failed or timed out; the message holds the end of their logs."""


class Launcher(Protocol):
    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        """Run ``entrypoint`` for this run; return when every worker succeeded, raise otherwise."""


class InProcess:
    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        importlib.import_module(entrypoint).run(cfg)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def dies_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: Linux sends ``sig`` to the child when the process that started it dies, even by
    SIGKILL (``PR_SET_PDEATHSIG``), so no worker or server component outlives its launcher."""

    def arm() -> None:  # pragma: no cover - runs in the child between fork and exec
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # 1 = PR_SET_PDEATHSIG

    return arm


class AlreadyTraining(RuntimeError):
    """Another attempt is training this run right now: starting a second worker group would corrupt both."""


WORKERS_FILE = "workers.json"  # pids of the group this run's launcher started last


def _alive(pid: int, command: list[str]) -> bool:
    """The pid still runs this command (not a new process that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [c.decode(errors="replace") for c in cmdline if c][: len(command)] == command


def stop_leftover_workers(log_dir: Path) -> list[int]:
    """SIGKILL workers an earlier attempt left running (its launcher was killed before it could stop them)."""
    record = log_dir / WORKERS_FILE
    if not record.exists():
        return []
    left = json.loads(record.read_text())
    stopped = [pid for pid in left["pids"] if _alive(pid, left["command"])]
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if stopped:
        log.warning("stopped %d worker(s) an earlier attempt left running: %s", len(stopped), stopped)
    record.unlink()
    return stopped


@contextlib.contextmanager
def training_lock(log_dir: Path) -> Generator[None, None, None]:
    """Held while a worker group of this run trains; a second launch fails at once instead of waiting."""
    import fcntl

    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "launcher.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise AlreadyTraining(
                f"another attempt (pid {fh.read().strip() or '?'}) is training this run ({log_dir}): "
                "not starting a second worker group"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield


class LocalProcesses:
    def __init__(self, timeout: float = 4 * 3600, grace: float = 10.0) -> None:
        self.timeout, self.grace = timeout, grace

    def launch(self, entrypoint: str, cfg: RunConfig) -> None:
        log_dir = RunLayout.of(cfg).worker_logs
        with training_lock(log_dir):
            stop_leftover_workers(log_dir)
            self._launch(entrypoint, cfg, log_dir)

    def _launch(self, entrypoint: str, cfg: RunConfig, log_dir: Path) -> None:
        n = cfg.engines.num_workers
        workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
        command = [sys.executable, "-m", entrypoint, *cfg.to_argv()]
        procs: list[subprocess.Popen[str]] = []
        pumps: list[threading.Thread] = []
        logs = [log_dir / f"worker-{i}.log" for i in range(n)]
        log.info("starting %d worker(s) of %s on %s (logs also in %s)", n, entrypoint, workers, log_dir)
        try:
            for i in range(n):
                env = dict(os.environ)
                if n > 1:
                    env["TF_CONFIG"] = json.dumps(tf_config(workers, i))
                    env["CUDA_VISIBLE_DEVICES"] = ""  # local workers share one machine: CPU only
                proc = subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                    preexec_fn=dies_with_parent(signal.SIGKILL),
                )  # fmt: skip
                procs.append(proc)
                (log_dir / WORKERS_FILE).write_text(json.dumps({"command": command, "pids": [p.pid for p in procs]}))
                pump = threading.Thread(target=_pump, args=(i, proc.stdout, logs[i]), daemon=True)
                pump.start()
                pumps.append(pump)
            failed = self._wait(procs)
        finally:
            self._stop(procs)
            for pump in pumps:
                pump.join(timeout=5)
            (log_dir / WORKERS_FILE).unlink(missing_ok=True)
        if failed:
            detail = "\n".join(f"--- worker {i} ({logs[i]}) ---\n{logs[i].read_text()[-2000:]}" for i in failed)
            raise WorkersFailed(f"{len(failed)} of {n} workers failed or timed out:\n{detail}")

    def _wait(self, procs: list[subprocess.Popen[str]]) -> list[int]:
        """Until all exit, one fails or time runs out; the indices of the workers that did not succeed."""
        deadline = time.monotonic() + self.timeout
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return [i for i, p in enumerate(procs) if p.poll() != 0]

    def _stop(self, procs: list[subprocess.Popen[str]]) -> None:
        """SIGTERM every worker still running, SIGKILL what is left after the grace period."""
        running = [p for p in procs if p.poll() is None]
        for p in running:
            p.terminate()
        deadline = time.monotonic() + self.grace
        for p in running:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if running:
            log.warning("stopped %d worker(s) still running", len(running))


def _pump(index: int, stream: IO[str] | None, path: Path) -> None:
    """Copy a worker's output into its log file and into this process's log, line by line."""
    if stream is None:
        return
    prefix = logging.getLogger(f"{__name__}.worker{index}")
    with open(path, "w") as out:
        for line in stream:
            out.write(line)
            out.flush()
            prefix.info("[worker %d] %s", index, line.rstrip())


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
