"""Run in a fresh process: load a SavedModel and print its predictions for a Parquet sample as JSON.

A fresh interpreter proves the export stands alone: no Python objects, custom layers or
in-memory state from the training process are needed to serve it.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--sample", required=True, help="Parquet file with the model's input columns")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq
    import tensorflow as tf

    from retrainer.serving.pyfunc_model import to_signature_inputs

    loaded = tf.saved_model.load(args.model)
    serve = loaded.signatures["serving_default"]
    frame = pq.read_table(args.sample).to_pandas()
    outputs = serve(**to_signature_inputs(frame, serve.structured_input_signature[1]))
    preds = next(iter(outputs.values())).numpy().reshape(-1).tolist()
    json.dump({"predictions": preds}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
