"""The run summary names tf.distribute strategies as people know them, not by private class names."""

from __future__ import annotations

import pytest

from retrainer.runners.run_summary import strategy_label


@pytest.mark.parametrize(
    ("kept", "shown"),
    [
        ("_DefaultDistributionStrategy", "one device (no distribution strategy)"),
        ("MirroredStrategy", "MirroredStrategy"),
        ("CollectiveAllReduceStrategy", "MultiWorkerMirroredStrategy"),
        ("TPUStrategyV2", "TPUStrategy"),
        ("SomeFutureStrategy", "SomeFutureStrategy"),
    ],
)
def test_strategies_are_named_as_tf_distribute_documents_them(kept: str, shown: str) -> None:
    assert strategy_label(kept) == shown
