"""A stand-in entry point for launcher tests: it records that it ran, then sleeps, succeeds or fails.

Launchers start any entry point the same way; the real training entry point is exercised by the
multi-worker test in test_training.py. This one is here to make failures and kills cheap to provoke.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from retrainer.core.config import RunConfig


def run(cfg: RunConfig) -> None:
    index = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": 0}}'))["task"]["index"]
    marker = Path(cfg.engines.data_root) / f"probe-{index}.json"
    seen = {"pid": os.getpid(), "argv": cfg.to_argv(), "cmdline": Path("/proc/self/cmdline").read_text()}
    marker.write_text(json.dumps(seen | {"secret_env": cfg.secret_env()}))
    print(f"hello from {index}", flush=True)
    if os.environ.get("PROBE_FAIL_INDEX") == str(index):
        print(f"worker {index} gives up", flush=True)
        raise SystemExit(3)
    time.sleep(float(os.environ.get("PROBE_SLEEP", "0")))


def main(argv: list[str] | None = None) -> int:
    run(RunConfig.from_argv(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
