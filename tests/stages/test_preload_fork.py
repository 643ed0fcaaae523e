"""The fork that preloading relies on: a process that imported the tasks' libraries (and nothing more) forks a
child that uses them for real, as a task forked from a LocalExecutor worker or a Celery pool process does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from retrainer.runners.preload import MODULES, preload
    took = preload()
    before = set(sys.modules)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task: TensorFlow trains and reads a dataset, Great Expectations validates, MLflow logs
        import numpy as np, keras, tensorflow as tf, great_expectations as gx, mlflow, pandas as pd
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
        model.compile("adam", "mse")
        history = model.fit(np.random.rand(64, 3), np.random.rand(64), epochs=2, verbose=0)
        total = sum(int(b.numpy().sum()) for b in tf.data.Dataset.range(10).batch(4))
        ctx = gx.get_context(mode="ephemeral")
        batch = ctx.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
        frame = pd.DataFrame({"x": [1, 2, 3]})
        ok = batch.get_batch(batch_parameters={"dataframe": frame}).validate(
            gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=5)).success
        mlflow.set_tracking_uri("sqlite:///" + sys.argv[1])
        with mlflow.start_run():
            mlflow.log_metric("loss", history.history["loss"][-1])
        fresh = sorted(m for m in ("tensorflow", "great_expectations", "mlflow") if m not in before)
        os.write(write, json.dumps({"sum": total, "gx": ok, "imported_again": fresh}).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": status, "child": json.loads(os.read(read, 10000) or b"null"), "took": took}))
    """
)


def test_a_task_forked_after_the_preload_trains_validates_and_logs(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "mlflow.db")], capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 0, out.stderr[-3000:]
    assert result["child"] == {"sum": 45, "gx": True, "imported_again": []}
    assert {"tensorflow", "great_expectations", "mlflow"} <= set(result["took"])
