"""`make airflow`'s program (`python -m retrainer.devtools.local_stack up`): every component up on 127.0.0.1 only,
the login it prints works, secrets generated once into a 0600 file, Ctrl-C stops every process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from retrainer.core.processes import free_ports
from retrainer.devtools.secrets_file import SECRET_KEYS, ensure_secrets
from support import ROOT, SPARK_CONNECT_URL


def test_secrets_are_generated_once_private_and_complete(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    first = ensure_secrets(path)
    assert set(SECRET_KEYS) <= set(first) and all(len(first[k]) >= 16 for k in SECRET_KEYS)
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_secrets(path) == first  # not regenerated
    from cryptography.fernet import Fernet

    Fernet(first["AIRFLOW_FERNET_KEY"].encode())  # a usable key


def test_no_secret_is_hard_coded_in_the_repository() -> None:
    """A literal value after a secret's name (not a ${VAR} reference) anywhere in a tracked file."""
    names = "JWT_SECRET|FERNET_KEY|ADMIN_PASSWORD|POSTGRES_PASSWORD"
    value = r"""(["'][^"'${}]{6,}["']|[\w+/=-]{6,}$)"""  # a quoted literal, or a bare word ending the line
    literal = re.compile(rf"(?<![{{\w])[A-Z_]*({names})[\"']?\s*[?:]?[:=]\s*{value}", re.MULTILINE)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    tracked.append("docker-compose.yaml")
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".py", ".yaml", ".yml", ".cfg", ".toml", ".sh", ".sql") or name == "Makefile":
            found = literal.search(path.read_text(errors="replace"))
            assert found is None, f"{name} hard-codes a secret: {found.group(0) if found else ''}"


def _listening(root: psutil.Process) -> set[tuple[str, int]]:
    pids = {root.pid} | {c.pid for c in root.children(recursive=True)}
    for child in list(pids):
        try:  # the components run in their own sessions: find them through their parent
            pids |= {c.pid for c in psutil.Process(child).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in pids}


def test_make_airflow_serves_on_loopback_and_stops_on_ctrl_c(tmp_path: Path, session_dir: Path) -> None:
    api, ui = free_ports(2)
    env = {
        **os.environ,
        "RETRAINER_HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
        "AIRFLOW_PORT": str(api),
        "MLFLOW_PORT": str(ui),
    }
    (tmp_path / "dags").symlink_to(ROOT / "dags")
    (tmp_path / "plugins").symlink_to(ROOT / "plugins")
    log = tmp_path / "stack.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "retrainer.devtools.local_stack", "up"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops everything" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        text = log.read_text()
        secrets = ensure_secrets(tmp_path / ".env")
        assert f"http://127.0.0.1:{api}" in text and f"http://127.0.0.1:{ui}" in text
        assert f"admin / {secrets['AIRFLOW_ADMIN_PASSWORD']}" in text
        assert f"Spark    {SPARK_CONNECT_URL} (Spark Connect, already running" in text  # the tests' server, reused

        bound = _listening(psutil.Process(proc.pid))
        assert {("127.0.0.1", api), ("127.0.0.1", ui)} <= bound
        assert all(ip == "127.0.0.1" for ip, _ in bound), bound  # no 0.0.0.0, no ::

        body = json.dumps({"username": "admin", "password": secrets["AIRFLOW_ADMIN_PASSWORD"]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{api}/auth/token", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.load(resp)["access_token"]
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert children
        # The scheduler (LocalExecutor) imports the tasks' libraries before it forks its workers; the components
        # that fork no tasks do not (retrainer.runners.preload).
        servers = tmp_path / "airflow" / "logs" / "servers"
        deadline = time.monotonic() + 120
        while "retrainer preload:" not in (servers / "scheduler.log").read_text():
            assert time.monotonic() < deadline, (servers / "scheduler.log").read_text()[-3000:]
            time.sleep(1)
        line = next(x for x in (servers / "scheduler.log").read_text().splitlines() if "retrainer preload:" in x)
        assert "'tensorflow'" in line and "'great_expectations'" in line and "'mlflow'" in line, line
        for other in ("dag-processor", "triggerer", "api-server"):
            assert "retrainer preload:" not in (servers / f"{other}.log").read_text(), other
    finally:
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        proc.wait(timeout=90)
    text = log.read_text()  # honcho's own account of the stop
    assert "SIGINT received" in text and "sending SIGTERM to scheduler" in text and "stopped" in text, text[-3000:]
    time.sleep(2)
    assert not [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
