"""Run in a fresh process: load a SavedModel and print its predictions for a Parquet sample as JSON.

A fresh interpreter proves the export stands alone: no Python objects, custom layers or
in-memory state from the training process are needed to serve it. With ``--wait`` the process imports
TensorFlow first and then reads the model and sample paths from a JSON line on stdin: the export stage
starts it before it loads and exports the model, so the child's TensorFlow import (most of its cost)
overlaps that work instead of following it.

A line ``{"tflite": {"network", "encoded", "out"}}`` before the model's asks it also to convert the network alone
to TF Lite and predict the sample's encoded features with TF Lite's interpreter (:func:`tflite_predictions`), for
the export stage to compare with what the SavedModel served on the raw rows: the export stage sends it as soon as
the network is written, so the conversion (about a second) overlaps the export stage writing the serving
SavedModel; the result comes with the reply to the model's line.

The request may also ask for latency (``"latency": {"batches": [1, 256], "repeats": 100}``): the signature is
then called ``repeats`` times per batch size on rows of the sample (repeated to fill the batch) after a few
untimed calls, and the p50 and p99 of the calls' wall times are printed with the predictions. Measured here,
in the process that only loaded the SavedModel, as a server would serve it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

WARM_UP_CALLS = 3  # untimed: the first calls build the function's kernels and caches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="the SavedModel folder (or give --wait)")
    parser.add_argument("--sample", help="Parquet file with the model's input columns (or give --wait)")
    parser.add_argument("--wait", action="store_true", help='import first, then read {"model", "sample"} from stdin')
    args = parser.parse_args(argv)
    if not args.wait and not (args.model and args.sample):
        parser.error("give --model and --sample, or --wait")

    import pyarrow.parquet as pq
    import tensorflow as tf

    from retrainer.serving.signature_inputs import to_signature_inputs

    latency: dict[str, Any] = {}
    converted: dict[str, Any] | None = None
    if args.wait:
        request = _next_request()
        if request is not None and "tflite" in request:  # the TF Lite conversion first, done while export writes
            lite = request["tflite"]
            converted = tflite_predictions(lite["network"], lite["encoded"], lite["out"])
            request = _next_request()
        if request is None:  # the export stage gave up before it had a model: nothing to check
            return 0
        args.model, args.sample = request["model"], request["sample"]
        latency = request.get("latency") or {}
    loaded = tf.saved_model.load(args.model)
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]
    frame = pq.read_table(args.sample).to_pandas()
    outputs = serve(**to_signature_inputs(frame, spec))
    preds = next(iter(outputs.values())).numpy().reshape(-1).tolist()
    out: dict[str, Any] = {"predictions": preds}
    if latency:
        out["latency_ms"] = {
            str(b): measure(serve, to_signature_inputs(rows_of(frame, b), spec), int(latency.get("repeats", 100)))
            for b in latency.get("batches", [1, 256])
        }
    if converted is not None:
        out["tflite"] = converted
    json.dump(out, sys.stdout)
    return 0


def _next_request() -> dict[str, Any] | None:
    """The next JSON line on stdin, or None when stdin closes without one."""
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else None


def tflite_predictions(network: str, encoded: str, path: str) -> dict[str, Any]:
    """Convert the network SavedModel ``network`` to TF Lite (built-in ops only) into ``path`` and predict the
    encoded sample ``encoded`` (``.npz``, one array per network input) with TF Lite's interpreter:
    ``{"predictions", "bytes"}``, or ``{"error"}`` when conversion or inference fails (an op TF Lite lacks): the
    SavedModel is what serves, the TF Lite file an extra, and its failure is reported, never a failed export."""
    import warnings

    import numpy as np
    import tensorflow as tf

    try:
        flat = tf.lite.TFLiteConverter.from_saved_model(network, signature_keys=["serving_default"]).convert()
        with open(path, "wb") as f:
            f.write(flat)
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice (LiteRT is the successor)
            warnings.simplefilter("ignore")
            runner = tf.lite.Interpreter(model_content=flat).get_signature_runner("serving_default")
        wanted = runner.get_input_details()
        with np.load(encoded) as arrays:
            outputs = runner(**{k: arrays[k].astype(wanted[k]["dtype"]) for k in wanted})
        predictions = next(iter(outputs.values())).reshape(-1).tolist()
    except Exception as exc:  # noqa: BLE001 - reported to the export stage, which keeps no file
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        return {"error": f"{type(exc).__name__}: {first_line}"}
    return {"predictions": predictions, "bytes": len(flat)}


def rows_of(frame: Any, n: int) -> Any:
    """``n`` rows of ``frame``, its rows repeated as often as needed."""
    import pandas as pd

    copies = -(-n // max(len(frame), 1))
    return pd.concat([frame] * copies, ignore_index=True).head(n)


def measure(serve: Any, inputs: dict[str, Any], repeats: int) -> dict[str, float]:
    """p50 and p99 wall milliseconds of ``repeats`` calls of the signature on ``inputs`` (outputs fetched)."""
    import numpy as np

    for _ in range(WARM_UP_CALLS):
        next(iter(serve(**inputs).values())).numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        next(iter(serve(**inputs).values())).numpy()
        times.append((time.perf_counter() - started) * 1000.0)
    return {"p50": round(float(np.percentile(times, 50)), 3), "p99": round(float(np.percentile(times, 99)), 3),
            "calls": repeats}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
