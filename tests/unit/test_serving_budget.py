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
