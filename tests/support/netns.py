"""Several hosts on one machine for the multi-host test: one Linux network namespace per host, each with its own
address on a bridge, its own loopback and its own host name, and an ``/etc/hosts`` that names every other host (as
a compose network's DNS does). Built from iproute2 (``ip netns``, veth pairs, a bridge) and util-linux
(``unshare --uts``); needs root. The test process stays in the machine's own namespace and reaches the hosts over
the bridge, whose address on this side is ``.1``.

``ip netns exec`` bind-mounts ``/etc/netns/<namespace>/hosts`` over ``/etc/hosts`` for what it starts: that is
how each host resolves the others by name without touching the machine's own ``/etc/hosts``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Generator
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


def available() -> str | None:
    """Why several hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"rtprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclasses.dataclass(frozen=True)
class Host:
    name: str  # its host name, resolvable by every other host
    namespace: str
    address: str

    def argv(self, command: list[str]) -> list[str]:
        """``command`` run on this host: in its namespace, under its own host name (a UTS namespace of its own,
        as a container has), so that ``socket.getfqdn()`` there answers its name."""
        script = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--", "sh", "-c", script, self.name,
                *command]  # fmt: skip


@dataclasses.dataclass
class Network:
    """A bridge and its hosts; :meth:`close` kills every process left in them and removes everything it made."""

    tag: str
    subnet: ipaddress.IPv4Network
    hosts: dict[str, Host] = dataclasses.field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"rtbr{self.tag}"

    @property
    def gateway(self) -> str:
        """This side of the bridge: the test process's own address on the hosts' network."""
        return str(self.subnet.network_address + 1)

    @classmethod
    @contextlib.contextmanager
    def create(cls, names: list[str]) -> Generator[Network, None, None]:
        # a subnet and names of this run's own: two test runs at once (two checkouts) do not meet
        tag = uuid.uuid4().hex[:6]
        subnet = ipaddress.IPv4Network(f"10.{random.randint(64, 250)}.{random.randint(0, 255)}.0/24")
        net = cls(tag, subnet)
        try:
            net._up(names)
            yield net
        finally:
            net.close()

    def _up(self, names: list[str]) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for index, name in enumerate(names, start=2):
            host = Host(name, f"rt-{self.tag}-{name}"[:40], str(self.subnet.network_address + index))
            outside, inside = f"rt{self.tag}o{index}", f"rt{self.tag}i{index}"
            _ip("netns", "add", host.namespace)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", host.namespace)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", inside)
            _ip("-n", host.namespace, "link", "set", inside, "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
            self.hosts[name] = host
        table = "127.0.0.1\tlocalhost\n" + "".join(f"{h.address}\t{h.name}\n" for h in self.hosts.values())
        for host in self.hosts.values():
            folder = NETNS_ETC / host.namespace
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(table)

    def pids(self, host: Host) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split()]

    def close(self) -> None:
        """Kill what still runs on the hosts (SIGTERM, then SIGKILL), delete namespaces, veths and the bridge."""
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            left = [p for h in self.hosts.values() for p in self.pids(h)]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while left and time.monotonic() < deadline:
                time.sleep(0.5)
                left = [p for h in self.hosts.values() for p in self.pids(h)]
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True)
            shutil.rmtree(NETNS_ETC / host.namespace, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
