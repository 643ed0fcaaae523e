"""The serving budget's verdict: which measured figure is over which limit, and which setting to change."""

from __future__ import annotations


def test_serving_budgets_name_what_is_over_and_zero_means_unchecked() -> None:
    from retrainer.stages.export import over_budget

    latency = {"1": {"p50": 2.0, "p99": 9.5}, "256": {"p50": 20.0, "p99": 31.0}}
    budgets = {"p99_ms@1": 5.0, "p99_ms@256": 0.0, "size_mib": 1.0}
    assert over_budget(3 * 2**20, latency, budgets) == [
        "p99_ms@1 9.50 > 5 (RETRAINER_SERVING_P99_MS_BATCH1)",
        "size_mib 3.00 > 1 (RETRAINER_SAVED_MODEL_MAX_MB)",
    ]
    assert over_budget(2**10, latency, {"p99_ms@1": 10.0, "p99_ms@256": 31.0, "size_mib": 0.0}) == []


def test_a_tflite_conversion_is_kept_only_when_it_agrees_and_a_failure_is_reported_not_raised(tmp_path) -> None:
    import numpy as np

    from retrainer.stages.export import tflite_verdict

    served = np.array([0.1, 0.5, 0.9])
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x" * 10)
    kept = tflite_verdict({"predictions": [0.1, 0.5, 0.900001], "bytes": 10}, served, path)
    assert kept["kept"] and kept["bytes"] == 10 and kept["note"] == "" and path.exists()
    off = tflite_verdict(None, served, None)
    assert not off["kept"] and "RETRAINER_TFLITE=off" in off["note"]
    for reply, why in [
        ({"predictions": [0.1, 0.5, 0.7], "bytes": 10}, "disagrees with the SavedModel: max |diff| 0.2"),
        ({"predictions": [0.1], "bytes": 10}, "(1,) predictions for (3,) rows"),
        ({"error": "ConverterError: op FooBar is neither a custom op nor a flex op"}, "op FooBar"),
    ]:
        path.write_bytes(b"x" * 10)
        verdict = tflite_verdict(reply, served, path)
        assert not verdict["kept"] and why in verdict["note"] and not path.exists(), verdict
