"""Small helpers for the child processes retrainer starts (training workers, local servers): free ports
to give them, and a guarantee that they do not outlive their parent."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable


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
