"""The launcher seam: in-process and local worker processes, their logs, failures and kills."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrainer.core.config import RunConfig
from retrainer.core.errors import WorkersFailed
from retrainer.core.layout import RunLayout
from retrainer.training.launchers import InProcess, get_launcher
from retrainer.training.local_processes import WORKERS_FILE, AlreadyTraining, LocalProcesses
from support import ROOT

PROBE = "support.launcher_probe"


@pytest.fixture
def probe_env(monkeypatch) -> None:
    """Worker processes must import the probe module from tests/."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))


def _cfg(tmp_path: Path, n: int, **engines: str) -> RunConfig:
    return RunConfig.build(
        "2013-02-05", data_root=str(tmp_path), launcher="local_processes" if n > 1 else "in_process", num_workers=n,
        seed=11, **engines,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_launchers_are_chosen_by_name() -> None:
    assert isinstance(get_launcher("in_process"), InProcess)
    assert isinstance(get_launcher("local_processes"), LocalProcesses)
    with pytest.raises(ValueError, match="unknown launcher 'slurm'"):
        get_launcher("slurm")


def test_in_process_runs_the_entry_point_here(tmp_path: Path, probe_env) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        InProcess().launch(PROBE, _cfg(tmp_path, 1))
    finally:
        sys.path.remove(str(ROOT / "tests"))
    assert json.loads((tmp_path / "probe-0.json").read_text())["pid"] == os.getpid()


def test_local_workers_get_the_run_config_and_their_output_is_streamed(tmp_path: Path, probe_env, caplog) -> None:
    caplog.set_level(logging.INFO, logger="retrainer.training.local_processes")
    cfg = _cfg(tmp_path, 2, tracking_uri="http://ml:s3cret@127.0.0.1:9")
    LocalProcesses().launch(PROBE, cfg)
    for i in range(2):
        seen = json.loads((tmp_path / f"probe-{i}.json").read_text())
        assert seen["argv"] == cfg.to_argv() and seen["secret_env"] == cfg.secret_env() and seen["pid"] != os.getpid()
        assert "s3cret" not in seen["cmdline"]  # the tracking URI reached the worker in its environment
        assert f"hello from {i}" in (RunLayout.of(cfg).worker_logs / f"worker-{i}.log").read_text()
    messages = [r.getMessage() for r in caplog.records]
    assert "[worker 0] hello from 0" in messages and "[worker 1] hello from 1" in messages


def test_one_failing_worker_stops_the_others_and_is_reported(tmp_path: Path, probe_env, monkeypatch) -> None:
    monkeypatch.setenv("PROBE_FAIL_INDEX", "1")
    monkeypatch.setenv("PROBE_SLEEP", "600")  # worker 0 would wait for ten minutes
    started = time.monotonic()
    with pytest.raises(WorkersFailed) as err:
        LocalProcesses(grace=2).launch(PROBE, _cfg(tmp_path, 2))
    assert time.monotonic() - started < 60
    assert "worker 1 gives up" in str(err.value)
    survivor = json.loads((tmp_path / "probe-0.json").read_text())["pid"]
    assert not _alive(survivor), "worker 0 kept running after worker 1 failed"


LAUNCH_SCRIPT = """
import sys
from retrainer.core.config import RunConfig
from retrainer.training.local_processes import LocalProcesses
LocalProcesses().launch("support.launcher_probe", RunConfig.from_argv(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_task_stops_its_workers(tmp_path: Path, probe_env, monkeypatch, sig: int) -> None:
    """The Airflow task is the launching process: when it is killed, no worker may outlive it."""
    monkeypatch.setenv("PROBE_SLEEP", "600")
    task = subprocess.Popen([sys.executable, "-c", LAUNCH_SCRIPT, *_cfg(tmp_path, 2).to_argv()], env=os.environ)
    markers = [tmp_path / f"probe-{i}.json" for i in range(2)]
    deadline = time.monotonic() + 60
    while not all(m.exists() and m.read_text() for m in markers):
        assert time.monotonic() < deadline and task.poll() is None, "workers did not start"
        time.sleep(0.2)
    pids = [json.loads(m.read_text())["pid"] for m in markers]
    task.send_signal(sig)
    task.wait(timeout=30)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), f"workers {pids} outlived the task killed by {sig!r}"


def test_a_second_attempt_never_starts_workers_beside_a_running_group(tmp_path: Path, probe_env, monkeypatch) -> None:
    monkeypatch.setenv("PROBE_SLEEP", "600")
    cfg = _cfg(tmp_path, 2)
    first = subprocess.Popen([sys.executable, "-c", LAUNCH_SCRIPT, *cfg.to_argv()], env=os.environ)
    try:
        markers = [tmp_path / f"probe-{i}.json" for i in range(2)]
        deadline = time.monotonic() + 60
        while not all(m.exists() and m.read_text() for m in markers):
            assert time.monotonic() < deadline and first.poll() is None, "workers did not start"
            time.sleep(0.2)
        for m in markers:
            m.unlink()
        with pytest.raises(AlreadyTraining, match=f"pid {first.pid}"):
            LocalProcesses().launch(PROBE, cfg)
        assert not any(m.exists() for m in markers), "the second attempt started workers"
    finally:
        first.kill()
        first.wait()


def test_workers_left_by_a_killed_attempt_are_stopped_before_new_ones_start(tmp_path: Path, probe_env) -> None:
    """As if the launcher died without its death signal reaching the workers (another host's kill, a bug)."""
    cfg = _cfg(tmp_path, 2)
    command = [sys.executable, "-m", PROBE, *cfg.to_argv()]
    leftover = subprocess.Popen(command, env={**os.environ, "PROBE_SLEEP": "600"})
    try:
        marker, deadline = tmp_path / "probe-0.json", time.monotonic() + 60
        while not (marker.exists() and marker.read_text()):  # it runs the probe (exec is done)
            assert time.monotonic() < deadline and leftover.poll() is None
            time.sleep(0.2)
        log_dir = RunLayout.of(cfg).worker_logs
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / WORKERS_FILE).write_text(json.dumps({"command": command, "pids": [leftover.pid, 999999]}))
        LocalProcesses().launch(PROBE, cfg)
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert not (log_dir / WORKERS_FILE).exists()  # the new group finished and cleared its record
    finally:
        leftover.kill()
