"""The contract is the single source of the data's shape: every derived view agrees with it."""

from __future__ import annotations

import pytest

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
    known = r"known: \['arrival_delay_minutes', 'flight_delay'\]"
    known = r"known: \['arrival_delay_minutes', 'flight_delay'\]"
    with pytest.raises(ValueError, match=rf"unknown workload 'taxi'; {known}"):
        get_workload("taxi")
    with pytest.raises(ValueError, match="unknown workload '_nyc_flights'"):
        get_workload("_nyc_flights")  # shared code, not a workload


def test_both_flight_workloads_share_features_and_differ_in_label_and_objective() -> None:
    delay, minutes = get_workload("flight_delay"), get_workload("arrival_delay_minutes")
    assert delay.contract.features == minutes.contract.features
    assert (delay.contract.label.name, minutes.contract.label.name) == ("is_late", "arr_delay_minutes")
    assert (delay.objective.headline, delay.objective.higher_is_better) == ("auc", True)
    assert (minutes.objective.headline, minutes.objective.higher_is_better) == ("rmse", False)
    assert delay.registered_model != minutes.registered_model
    assert delay.dimensions == ("planes",)  # only what build_features reads is required
