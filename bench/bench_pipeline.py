"""Benchmark: time and peak memory of check-raw (cold and warm), features, validate and train as the window grows.

Each stage runs as its own ``retrainer`` process (as an Airflow task would); peak RSS is the
process's own maximum resident set from ``wait4`` (the Spark JVM is a separate process and is
reported by Spark's own metrics, not here). Results go to bench/RESULTS.md.

    make bench                      # windows 28, 91, 182 days for a run dated 2013-12-01
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from retrainer.core.layout import RunLayout
from retrainer.core.results import FeaturesResult, TrainingResult

HERE = Path(__file__).resolve().parent


def run_stage(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one ``retrainer`` subcommand."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrainer.runners.cli", "--log-level", "WARNING", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"retrainer {' '.join(args)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", default="2013-12-01")
    parser.add_argument("--windows", default="28,91,182")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()

    data_root = os.environ.get("RETRAINER_DATA_ROOT", "data")
    bench_root = Path(data_root).resolve().parent / "bench-runs"
    bench_root.mkdir(exist_ok=True)
    if not (bench_root / "raw").exists():
        (bench_root / "raw").symlink_to(Path(data_root).resolve() / "raw")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{bench_root / 'mlflow.db'}"}
    rows = []
    for window in [int(w) for w in args.windows.split(",")]:
        common = ["--date", args.date, "--data-root", str(bench_root), "--window-days", str(window), "--eval-days", "7"]
        result = {"window": window}
        # The raw gate cold (every landed file scanned) and warm (records reused: unchanged files).
        for record in (Path(data_root).resolve() / "raw").glob("*/date=*/_gate.*.json"):
            record.unlink()
        result["check-raw"] = run_stage(["check-raw", *common], env)
        result["check-raw warm"] = run_stage(["check-raw", *common], env)
        for stage in ("features", "validate", "train"):
            extra = ["--epochs", str(args.epochs)] if stage == "train" else []
            result[stage] = run_stage([stage, *common, *extra], env)
        layout = RunLayout.latest(bench_root, "flight_delay", dt.date.fromisoformat(args.date))
        feats, training = layout.load(FeaturesResult), layout.load(TrainingResult)
        result["rows"] = feats.rows["train"] + feats.rows["eval"]
        result["ex_per_s"] = max(h["examples_per_second"] for h in training.history)
        rows.append(result)
        print(json.dumps(result), flush=True)

    lines = [
        f"Run dated {args.date}, eval 7 days, {args.epochs} epoch(s), batch 1024; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| window (days) | rows | check-raw cold s / peak MiB | check-raw warm | features | validate | train "
        "| train ex/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        stages = ("check-raw", "check-raw warm", "features", "validate", "train")
        cells = " | ".join(f"{r[s][0]:.0f} / {r[s][1]:.0f}" for s in stages)
        lines.append(f"| {r['window']} | {r['rows']:,} | {cells} | {r['ex_per_s']:,.0f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
