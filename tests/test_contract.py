"""The contract is the single source of the data's shape: every derived view agrees with it."""

from __future__ import annotations

import pytest

from retrainer.config import RunConfig
from retrainer.contract import Column, Contract, DType, Role, TableRules
from retrainer.workloads import get_workload
from retrainer.workloads.flight_delay import CONTRACT


def test_suite_covers_every_column_rule() -> None:
    specs = CONTRACT.expectations()
    by_type: dict[str, set[str]] = {}
    for s in specs:
        by_type.setdefault(s["type"], set()).add(s["kwargs"].get("column"))
    assert by_type["expect_column_to_exist"] == set(CONTRACT.names)
    assert by_type["expect_column_values_to_not_be_null"] == {c.name for c in CONTRACT.columns if not c.nullable}
    assert {"origin", "carrier", "month", "is_late"} <= by_type["expect_column_values_to_be_in_set"]
    assert "dest" in by_type["expect_column_values_to_match_regex"]
    origin_set = next(s for s in specs if s["type"].endswith("in_set") and s["kwargs"]["column"] == "origin")
    assert origin_set["kwargs"]["value_set"] == ["EWR", "JFK", "LGA"]
    label_rate = next(s for s in specs if s["type"] == "expect_column_mean_to_be_between")
    assert label_rate["kwargs"]["column"] == "is_late"


def test_serving_inputs_are_exactly_the_features() -> None:
    dtypes = CONTRACT.serving_dtypes()
    assert set(dtypes) == {c.name for c in CONTRACT.columns if c.role in (Role.NUMERIC, Role.CATEGORICAL)}
    assert "is_late" not in dtypes and "flight_date" not in dtypes
    assert dtypes["origin"] == "string" and dtypes["month"] == "int64" and dtypes["distance"] == "float32"


def test_contract_rejects_ambiguous_definitions() -> None:
    rules = TableRules("d", 1, 10, 0.0, 1.0)
    with pytest.raises(ValueError, match="duplicate"):
        Contract("x", (Column("d", DType.DATE, Role.KEY), Column("d", DType.DATE, Role.KEY)), rules)
    with pytest.raises(ValueError, match="label"):
        Contract("x", (Column("d", DType.DATE, Role.KEY),), rules)


def test_unknown_workload_is_named() -> None:
    with pytest.raises(ValueError, match="unknown workload 'taxi'"):
        get_workload("taxi")


def test_run_window_arithmetic_and_validation() -> None:
    import datetime as dt

    cfg = RunConfig(run_date=dt.date(2013, 6, 1), window_days=28, eval_days=7)
    assert (cfg.train_start, cfg.eval_start, cfg.end) == (
        dt.date(2013, 5, 4),
        dt.date(2013, 5, 25),
        dt.date(2013, 6, 1),
    )
    with pytest.raises(ValueError, match="window_days"):
        RunConfig(run_date=dt.date(2013, 6, 1), window_days=7, eval_days=7)
    with pytest.raises(ValueError, match="strategy"):
        RunConfig(run_date=dt.date(2013, 6, 1), strategy="gpu-please")
