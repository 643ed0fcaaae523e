"""Benchmark: does streaming Parquet into tf.data keep up with the model? Examples per second of the
real training step fed from the run's Parquet part files (``retrainer.training.dataset.make_dataset``:
record batches, shuffled per chunk, re-batched, prefetched) against the same model fed from tensors
already in memory (``Dataset.from_tensor_slices``), at 1x and 10x the run's training split, in one process.

10x streams the same part files ten times over (the page cache holds them, as it would a local
disk's working set); the in-memory feed makes ten passes over batches it cut before the clock
started. The first steps (tracing, warm-up) are not timed. Peak RSS (cumulative, the in-memory feed
runs first) shows what holding the split costs.

    make bench-train                # features of the run dated 2013-12-31, 350-day window
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import time
from pathlib import Path
from typing import Any

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.fingerprint import parquet_parts
from retrainer.core.layout import RunLayout
from retrainer.core.results import ValidationResult
from retrainer.workloads import get_workload

HERE = Path(__file__).resolve().parent
WARMUP_STEPS = 30


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _steps_per_second(model: Any, objective: Any, dataset: Any, batch: int) -> tuple[float, int]:
    """Examples/s over one pass of ``dataset``, after the warm-up steps."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(0.001)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(objective.per_example_loss(y, model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    rows, t0 = 0, None
    for i, (x, y) in enumerate(dataset):
        if i == WARMUP_STEPS:
            t0, rows = time.perf_counter(), 0
        step(x, y)
        rows += int(y.shape[0])
    if t0 is None:
        raise ValueError(f"fewer than {WARMUP_STEPS} batches of {batch}: use a longer window")
    return rows / (time.perf_counter() - t0), rows


def _in_memory(files: list[str], contract: Any, passes: int, batch: int) -> Any:
    """The fastest feed there is: the whole split as tensors already cut into batches, before the clock starts
    (per-row ``from_tensor_slices(...).batch`` is several times slower on this stack)."""
    import numpy as np
    import tensorflow as tf

    from retrainer.training.dataset import iter_chunks

    chunks = list(iter_chunks(files, contract))
    x = {k: np.concatenate([c[0][k] for c in chunks]) for k in chunks[0][0]}
    y = np.concatenate([c[1] for c in chunks])
    batches = [
        ({k: tf.constant(v[i : i + batch]) for k, v in x.items()}, tf.constant(y[i : i + batch]))
        for i in range(0, len(y) - batch + 1, batch)
    ]
    return [b for _ in range(passes) for b in batches]


def measure(date: dt.date, window_days: int, eval_days: int, scales: list[int], batch: int) -> list[dict[str, Any]]:
    from retrainer.training.dataset import make_dataset
    from retrainer.training.model import build_model

    cfg = RunConfig.build(date, window_days=window_days, eval_days=eval_days)
    workload = get_workload(cfg.run.workload)
    validated = RunLayout.of(cfg).load(ValidationResult)
    stats = atomic.read_json(validated.files.stats)
    files = [str(p) for p in parquet_parts(validated.files.train)]
    out = []
    for scale in scales:
        row: dict[str, Any] = {"scale": scale, "rows": stats["rows"] * scale}
        for feed in ("memory", "parquet"):
            model = build_model(workload.contract, workload.objective, stats, hidden_units=16, dropout=0.5)
            if feed == "parquet":
                dataset = make_dataset(files * scale, workload.contract, batch, seed=1)
            else:
                dataset = _in_memory(files, workload.contract, scale, batch)
            rate, _ = _steps_per_second(model, workload.objective, dataset, batch)
            row[f"{feed}_examples_per_s"] = round(rate)
            row[f"{feed}_peak_rss_mib"] = round(_rss_mib())
        row["ratio"] = round(row["parquet_examples_per_s"] / row["memory_examples_per_s"], 3)
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2013, 12, 31))
    parser.add_argument("--window-days", type=int, default=350)
    parser.add_argument("--eval-days", type=int, default=28)
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--out", default=str(HERE / "TRAIN_INPUT.md"))
    args = parser.parse_args()
    rows = measure(
        args.date, args.window_days, args.eval_days, [int(s) for s in args.scales.split(",")], args.batch_size
    )
    import os

    lines = [
        f"# tf.data input: Parquet stream vs in-memory tensors ({dt.date.today()})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. Training split "
        f"of the run dated {args.date} (window {args.window_days}, eval {args.eval_days}), batch {args.batch_size}, "
        "the project's model (hidden 16) on the default strategy. Peak RSS is the process's, cumulative.",
        "",
        "| data | rows | Parquet ex/s | in-memory ex/s | ratio | peak RSS after in-memory | after Parquet |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scale']}x | {r['rows']:,} | {r['parquet_examples_per_s']:,} | {r['memory_examples_per_s']:,} "
            f"| {r['ratio']} | {r['memory_peak_rss_mib']:,} MiB | {r['parquet_peak_rss_mib']:,} MiB |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
