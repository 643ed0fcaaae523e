"""Run in a fresh process: load a SavedModel and print its predictions for a Parquet sample as JSON.

A fresh interpreter proves the export stands alone: no Python objects, custom layers or
in-memory state from the training process are needed to serve it. With ``--wait`` the process imports
TensorFlow first and then reads the model and sample paths from a JSON line on stdin: the export stage
starts it before it loads and exports the model, so the child's TensorFlow import (most of its cost)
overlaps that work instead of following it.
"""

from __future__ import annotations

import argparse
import json
import sys


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

    if args.wait:
        line = sys.stdin.readline()
        if not line.strip():  # the export stage gave up before it had a model: nothing to check
            return 0
        paths = json.loads(line)
        args.model, args.sample = paths["model"], paths["sample"]
    loaded = tf.saved_model.load(args.model)
    serve = loaded.signatures["serving_default"]
    frame = pq.read_table(args.sample).to_pandas()
    outputs = serve(**to_signature_inputs(frame, serve.structured_input_signature[1]))
    preds = next(iter(outputs.values())).numpy().reshape(-1).tolist()
    json.dump({"predictions": preds}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
