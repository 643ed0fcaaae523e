"""Exclusive file locks between the runners of one deployment (DAG tasks, the CLI, spark-submit jobs)
that share a data root. ``flock``: released by the kernel if the holder dies, so a crash cannot wedge it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Generator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(path: Path, what: str, timeout_s: float = 900.0) -> Generator[None, None, None]:
    """Hold ``path``'s lock; wait (logging once: "waiting for the <what> ...") at most ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline, waiting = time.monotonic() + timeout_s, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    log.info("waiting for the %s %s (held by another run)", what, path)
                    waiting = True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what} {path} still held after {timeout_s:.0f} s") from None
                time.sleep(0.2)
        log.info("holding the %s %s", what, path)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
