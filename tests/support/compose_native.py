"""docker-compose.yaml run natively, one host per service (:mod:`support.netns`): what the multi-host test starts.

No Docker engine runs here, so the test cannot start the images; it starts what they would run. It reads the file
as a real Compose implementation resolves it (``docker-compose config``: variables, anchors, profiles) and, for
every service, runs its entrypoint and command with its environment, on a host of its own named as the service,
with its volumes mounted where the file mounts them (a private mount namespace per service: ``/opt`` is the
service's own writable layer, binds and named volumes on top), in the order and on the conditions of its
``depends_on``, and checks its health with its own ``healthcheck``. So what compose describes is what the test
ran; the differences are the images, replaced by this machine's installation:

- ``retrainer:dev`` (docker/Dockerfile): this virtualenv with the Airflow image's environment (``AIRFLOW_HOME``)
  and its entrypoint's rule (``bash`` and ``python`` run as given, anything else is an ``airflow`` command);
- ``postgres:*``: this machine's PostgreSQL binaries, with the official image's start-up (``initdb`` with the
  superuser's password, the ``/docker-entrypoint-initdb.d`` scripts once, then listening on every address);
- ``redis:*``: this machine's ``redis-server`` with the official image's ``--protected-mode no``;
- ``user:``, ``restart:``, ``ports:`` and device reservations have no effect (processes run as this user; the
  test reaches each host at its own address).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from support.netns import Host, Network

VENV_BIN = Path(sys.executable).parent
# The Airflow image's own environment (apache/airflow: ENV AIRFLOW_HOME, WORKDIR)
AIRFLOW_IMAGE_ENV = {"AIRFLOW_HOME": "/opt/airflow"}
AIRFLOW_WORKDIR = "/opt/airflow"
POSTGRES_DATA = "/var/lib/postgresql/data"
POSTGRES_INIT = "/docker-entrypoint-initdb.d/"


class ServiceFailed(RuntimeError):
    """A service exited, or did not become healthy, while the stack started; the message carries its log."""


def _unescape(value: Any) -> str:
    """Compose's ``$$`` is a literal ``$`` once the file is interpolated (``config`` prints it still escaped)."""
    return str(value).replace("$$", "$")


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(_unescape(value)) if isinstance(value, str) else [_unescape(v) for v in value]


def _mount(volume: Any) -> dict[str, Any]:
    """A volume in the long syntax; Compose v1's ``config`` prints the short one (``source:target[:mode]``)."""
    if isinstance(volume, dict):
        return volume
    source, target, *mode = str(volume).split(":")
    kind = "bind" if source.startswith(("/", ".")) else "volume"
    return {"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]}


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


@dataclasses.dataclass
class Service:
    name: str
    spec: dict[str, Any]
    host: Host
    process: subprocess.Popen | None = None
    healthy: bool = False
    last_check: float = 0.0

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))

    @property
    def volumes(self) -> list[dict[str, Any]]:
        return [_mount(v) for v in self.spec.get("volumes") or []]

    @property
    def depends_on(self) -> dict[str, str]:
        deps = self.spec.get("depends_on") or {}
        if isinstance(deps, list):
            return dict.fromkeys(deps, "service_started")
        return {name: (cond or {}).get("condition", "service_started") for name, cond in deps.items()}


@dataclasses.dataclass
class NativeCompose:
    """The services of a resolved compose file on the hosts of ``network``; files under ``base``."""

    config: dict[str, Any]  # `docker-compose config` parsed
    network: Network
    base: Path  # layers, named volumes and logs; readable by the postgres user (its data lives here)
    profiles: tuple[str, ...] = ()  # as `docker compose --profile P`: services of other profiles do not start
    extra_env: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # service -> test's settings
    services: dict[str, Service] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, spec in self.config["services"].items():
            if spec.get("profiles") and not set(spec["profiles"]) & set(self.profiles):
                continue
            host = self.network.hosts[spec.get("hostname", name)]
            self.services[name] = Service(name, spec, host)

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    def volume_source(self, mount: dict[str, Any]) -> Path:
        if mount["type"] == "bind":
            return Path(mount["source"])
        folder = self.base / "volumes" / mount["source"]
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- what each service runs ------------------------------------------------------------------------------
    def environment(self, service: Service) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "HOSTNAME": service.host.name,
            **{k: v for k, v in os.environ.items() if k in ("JAVA_HOME", "TMPDIR")},
        }
        if service.image.startswith("retrainer:"):
            env |= AIRFLOW_IMAGE_ENV
        env |= {k: "" if v is None else _unescape(v) for k, v in (service.spec.get("environment") or {}).items()}
        env |= self.extra_env.get(service.name, {})
        if service.image.startswith("postgres:"):
            env["PGHOST"] = str(self.base / "pg-socket")  # its own socket, not the machine's server's
        return env

    def command(self, service: Service) -> list[str]:
        spec = service.spec
        entrypoint, command = _argv(spec.get("entrypoint")), _argv(spec.get("command"))
        if service.image.startswith("postgres:"):
            return self._postgres(service)
        if service.image.startswith("redis:"):
            return [*(entrypoint or []), *(command or ["redis-server"]), "--protected-mode", "no"]
        if entrypoint:
            return [*entrypoint, *command]
        if service.image.startswith("retrainer:"):  # the Airflow image's entrypoint
            return command if command[:1] in (["bash"], ["python"]) else ["airflow", *command]
        raise ValueError(f"{service.name}: image {service.image!r} has no native equivalent here")

    def _postgres(self, service: Service) -> list[str]:
        """The official image's start-up on this machine's binaries, as the postgres user."""
        pg = _postgres_bin()
        data = next(self.volume_source(m) for m in service.volumes if m["target"] == POSTGRES_DATA)
        init = [self.volume_source(m) for m in service.volumes if m["target"].startswith(POSTGRES_INIT)]
        socket_dir = self.base / "pg-socket"
        socket_dir.mkdir(exist_ok=True)
        os.chmod(socket_dir, 0o777)
        subprocess.run(["chown", "-R", "postgres", str(data)], check=True)
        as_pg = "runuser -u postgres --"
        script = f"""set -e
D={shlex.quote(str(data))}; S={shlex.quote(str(socket_dir))}
if [ ! -s "$D/PG_VERSION" ]; then
  printf '%s\\n' "$POSTGRES_PASSWORD" > "$S/pw" && chown postgres "$S/pw"
  {as_pg} {pg}/initdb -D "$D" -U "$POSTGRES_USER" --pwfile="$S/pw" \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$S/pw"
  echo 'host all all all scram-sha-256' >> "$D/pg_hba.conf"
  {as_pg} {pg}/pg_ctl -D "$D" -o "-c listen_addresses='' -k $S" -w start >/dev/null
  {" ".join(f"bash {shlex.quote(str(f))};" for f in init)}
  {as_pg} {pg}/pg_ctl -D "$D" -m fast -w stop >/dev/null
fi
exec {as_pg} {pg}/postgres -D "$D" -c listen_addresses='*' -k "$S"
"""
        return ["bash", "-c", script]

    def mounts(self, service: Service) -> str:
        """Shell lines that give the service its filesystem: a layer of its own over ``/opt`` (what the machine
        has there stays visible), then each volume at its target. Run inside the namespace ``ip netns exec`` made,
        whose mounts the machine does not see."""
        layer = self.base / "layers" / service.name / "opt"
        layer.mkdir(parents=True, exist_ok=True)
        q = shlex.quote
        lines = [
            "set -e",
            f'for e in /opt/*; do n="${{e##*/}}"; if [ -d "$e" ]; then mkdir -p {q(str(layer))}/"$n"; '
            f'else touch {q(str(layer))}/"$n"; fi; mount --bind "$e" {q(str(layer))}/"$n"; done',
            f"mount --rbind {q(str(layer))} /opt",
        ]
        for mount in service.volumes:
            target = mount["target"]
            if not target.startswith("/opt/"):
                if service.image.startswith("postgres:"):
                    continue  # the postgres start-up reads its data and init folders where they are
                raise ValueError(f"{service.name}: volume target {target} is outside /opt (not supported natively)")
            source = self.volume_source(mount)
            parent = q(str(Path(target).parent))
            make = f"mkdir -p {q(target)}" if source.is_dir() else f"mkdir -p {parent} && touch {q(target)}"
            lines.append(f"{make} && mount --bind {q(str(source))} {q(target)}")
            if mount.get("read_only"):
                lines.append(f"mount -o remount,bind,ro {q(target)}")
        image_workdir = AIRFLOW_WORKDIR if service.image.startswith("retrainer:") else "/"
        workdir = service.spec.get("working_dir") or image_workdir
        lines.append(f"mkdir -p {q(workdir)} && cd {q(workdir)}")
        lines.append('exec "$@"')
        return "\n".join(lines)

    def argv(self, service: Service, command: list[str]) -> list[str]:
        return service.host.argv(["sh", "-c", self.mounts(service), service.name, *command])

    # -- starting, health, stopping ---------------------------------------------------------------------------
    def start_one(self, service: Service) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{service.name}.log", "w") as log:
            service.process = subprocess.Popen(
                self.argv(service, self.command(service)), env=self.environment(service), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def check_health(self, service: Service) -> bool:
        """The service's own ``healthcheck`` test, run on its host with its environment and mounts."""
        test = _argv((service.spec.get("healthcheck") or {}).get("test"))
        if not test:
            return service.process is not None and service.process.poll() is None
        kind, rest = test[0], test[1:]
        command = ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest
        done = subprocess.run(
            self.argv(service, command), env=self.environment(service), capture_output=True, text=True, timeout=120
        )
        return done.returncode == 0

    def _tail(self, service: Service) -> str:
        path = self.logs / f"{service.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"

    def _met(self, name: str, condition: str) -> bool:
        dep = self.services[name]
        if dep.process is None:
            return False
        if condition == "service_completed_successfully":
            code = dep.process.poll()
            if code not in (None, 0):
                raise ServiceFailed(f"{name} exited {code}:\n{self._tail(dep)}")
            return code == 0
        if condition == "service_healthy":
            return self._poll_health(dep)
        return True

    def _poll_health(self, service: Service) -> bool:
        """Whether the service has passed its health check, running the check at most every 2 s until it does."""
        if not service.healthy and service.process and time.monotonic() - service.last_check > 2:
            service.last_check = time.monotonic()
            service.healthy = self.check_health(service)
        return service.healthy

    def start(self, timeout: float = 420) -> None:
        """Start every service once what it depends on meets its condition; then wait until every service with a
        health check is healthy. A long-running service that exits while this waits fails the start."""
        pending = list(self.services.values())
        deadline = time.monotonic() + timeout
        while True:
            for service in list(pending):
                if all(self._met(dep, cond) for dep, cond in service.depends_on.items()):
                    self.start_one(service)
                    pending.remove(service)
            for service in self.services.values():
                one_shot = service.spec.get("restart") == "no"
                code = service.process.poll() if service.process else None
                if code is not None and (code != 0 or not one_shot):
                    raise ServiceFailed(f"{service.name} exited {code}:\n{self._tail(service)}")
            waiting = [s for s in self.services.values() if s.spec.get("healthcheck") and not s.healthy]
            if not pending and all([self._poll_health(s) for s in waiting]):  # a list: every check runs
                return
            if time.monotonic() > deadline:
                names = [s.name for s in pending] or [s.name for s in waiting if not s.healthy]
                tails = "\n".join(f"--- {s}\n{self._tail(self.services[s])}" for s in names)
                raise ServiceFailed(f"not started or not healthy within {timeout:.0f} s: {names}\n{tails}")
            time.sleep(1)

    def cpu_seconds(self) -> dict[str, float]:
        """Each running service's CPU so far: its process tree's user and system time, with what its finished
        children used (a Celery worker's forked tasks, Airflow's task processes once reaped). Where the team
        stack's share of ``make test`` goes (``cpu.tsv`` beside the services' logs)."""
        import psutil

        out: dict[str, float] = {}
        for service in self.services.values():
            if service.process is None or service.process.poll() is not None:
                continue
            total = 0.0
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(service.process.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = proc.cpu_times()
                        total += t.user + t.system + t.children_user + t.children_system
            out[service.name] = total
        return out

    def stop(self) -> None:
        """SIGTERM to every service (a Celery worker's warm shutdown), dependants first; SIGKILL what is left.
        First each service's CPU goes to ``cpu.tsv`` in the logs folder (evidence only: never fails the stop)."""
        try:
            cpu = self.cpu_seconds()
            rows = [f"{name}\t{seconds:.1f}" for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])]
            (self.logs / "cpu.tsv").write_text("service\tcpu_s\n" + "\n".join(rows) + "\n")
        except Exception as exc:  # noqa: BLE001
            print(f"team stack CPU not recorded: {exc}")
        started = [s for s in self.services.values() if s.process is not None]
        for service in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGTERM)
        for service in started:
            try:
                service.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait(timeout=10)

    @contextlib.contextmanager
    def running(self) -> Generator[NativeCompose, None, None]:
        try:
            self.start()
            yield self
        finally:
            self.stop()


def compose_config(env_file: Path, profiles: tuple[str, ...], *args: str) -> str:
    """``docker-compose config`` (or another subcommand's output) of the checkout's file with only ``env_file`` for
    variables: the machine's own AIRFLOW*/RETRAINER*/MLFLOW* variables do not leak into what is checked."""
    import pytest

    from support import ROOT

    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            raise AssertionError("docker-compose is not installed: `make test-tools` installs it")
        pytest.skip("docker-compose not installed (make test-tools)")
    argv = [
        binary,
        "-f",
        str(ROOT / "docker-compose.yaml"),
        "--project-directory",
        str(ROOT),
        "--env-file",
        str(env_file),
        *[a for p in profiles for a in ("--profile", p)],
        *(args or ("config",)),
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTGRES", "RETRAINER", "MLFLOW"))}
    done = subprocess.run(argv, capture_output=True, text=True, env=clean, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])}: {done.stderr}")
    return done.stdout


def unserved_training_queue(config: dict[str, Any], profiles: tuple[str, ...] = ()) -> str | None:
    """Why training would wait forever with these profiles, or None: the queue the DAG sends ``train`` to (the
    dag-processor's ``RETRAINER_TRAINING_QUEUE``: the queue is fixed when the DAG file is parsed) must be one that
    a Celery worker started with these profiles listens on."""
    services = {
        name: spec for name, spec in config["services"].items()
        if not spec.get("profiles") or set(spec["profiles"]) & set(profiles)
    }  # fmt: skip
    queue = str(services["airflow-dag-processor"]["environment"].get("RETRAINER_TRAINING_QUEUE") or "default")
    served: dict[str, str] = {}
    for name, spec in services.items():
        command = _argv(spec.get("command"))
        if command[:2] == ["celery", "worker"]:
            queues = command[command.index("--queues") + 1] if "--queues" in command else "default"
            served |= dict.fromkeys(queues.split(","), name)
    if queue in served:
        return None
    return f"train goes to queue {queue!r}, which no worker serves with profiles {list(profiles)} (served: {served})"
