"""The contract is the single source of the data's shape: every derived view agrees with it."""

from __future__ import annotations

import pytest

from retrainer.spec.contract import Column, Contract, DType, Role, TableRules
from retrainer.spec.raw_contract import RawColumn, RawSource
from retrainer.workloads import get_workload
from retrainer.workloads.flight_delay import CONTRACT


def test_suite_covers_every_column_rule() -> None:
    specs = CONTRACT.expectations()
    by_type: dict[str, set[str]] = {}
    for s in specs:
        by_type.setdefault(s["type"], set()).add(s["kwargs"].get("column"))
    assert "expect_column_to_exist" not in by_type  # the exact column set covers it
    assert "expect_column_values_to_be_in_type_list" not in by_type  # the cast to the contract guarantees types
    assert by_type["expect_column_values_to_not_be_null"] == {c.name for c in CONTRACT.columns if not c.nullable}
    assert {"origin", "carrier", "month", "is_late"} <= by_type["expect_column_values_to_be_in_set"]
    assert "dest" in by_type["expect_column_values_to_match_regex"]
    origin_set = next(s for s in specs if s["type"].endswith("in_set") and s["kwargs"]["column"] == "origin")
    assert origin_set["kwargs"]["value_set"] == ["EWR", "JFK", "LGA"]
    label_rate = next(s for s in specs if s["type"] == "expect_column_mean_to_be_between")
    assert label_rate["kwargs"]["column"] == "is_late"


def test_checks_that_hold_by_construction_are_marked_and_the_rest_are_not() -> None:
    specs = CONTRACT.expectations()
    built = {(s["type"], s["kwargs"].get("column")) for s in specs if s["meta"]["by_construction"]}
    # Derived by total functions or filtered by the stage: month/day_of_week from a valid date, the
    # label cast from a boolean and never null, the date key filtered to the window, the column set.
    assert ("expect_column_values_to_be_in_set", "month") in built
    assert ("expect_column_values_to_be_between", "day_of_week") in built
    assert ("expect_column_values_to_not_be_null", "is_late") in built
    assert ("expect_column_values_to_not_be_null", "flight_date") in built
    assert ("expect_table_columns_to_match_set", None) in built
    # What a broken feed can break is not marked: raw values passed through or joined.
    for column in ("carrier", "origin", "dest", "distance", "sched_dep_hour", "temp"):
        assert not any(c == column for _, c in built), column
    assert not any(t == "expect_column_mean_to_be_between" for t, _ in built)


def test_per_day_and_drift_suites_come_from_the_contract() -> None:
    per_day = CONTRACT.per_day_expectations(["2013-02-01", "2013-02-02"])
    bounded = {s["kwargs"].get("column"): s["kwargs"] for s in per_day}
    assert bounded["label_mean"]["min_value"] == CONTRACT.table.min_label_mean_per_day
    assert bounded["label_mean"]["max_value"] == CONTRACT.table.max_label_mean_per_day
    for c in CONTRACT.columns:
        if c.nullable:
            assert bounded[f"null_fraction.{c.name}"]["max_value"] == c.max_null_fraction_per_day
    drift = CONTRACT.drift_expectations()
    severities = {(s["kwargs"]["column"], s["severity"]): s["kwargs"]["max_value"] for s in drift}
    assert severities[("psi.temp", "warning")] == 0.25 and ("psi.temp", "critical") not in severities
    assert severities[("psi.carrier", "critical")] == 1.0


def test_raw_contract_declares_keys_dates_and_units() -> None:
    raw = get_workload("flight_delay").raw
    assert raw is get_workload("arrival_delay_minutes").raw  # shared sources, one gate record per day
    flights = raw.source("flights")
    assert flights.column("arr_delay").std_per_day == (5.0, 300.0)
    assert raw.source("weather").column("temp").max_shift_from_neighbours == 26.0
    with pytest.raises(ValueError, match="key columns"):
        RawSource("x", (RawColumn("a", "int"),), ("b",), (), 1, 2, (0.5, 1.5), 0.0)


def test_serving_inputs_are_exactly_the_features() -> None:
    dtypes = CONTRACT.serving_dtypes()
    assert set(dtypes) == {c.name for c in CONTRACT.columns if c.role in (Role.NUMERIC, Role.CATEGORICAL)}
    assert "is_late" not in dtypes and "flight_date" not in dtypes
    assert dtypes["origin"] == "string" and dtypes["month"] == "int64" and dtypes["distance"] == "float32"


def test_contract_rejects_ambiguous_definitions() -> None:
    rules = TableRules("d", 1, 10, 0.0, 1.0, 0.0, 1.0)
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


def test_a_row_rule_is_named_for_a_statistic_and_bounded_as_a_share() -> None:
    from retrainer.spec.raw_contract import RowRule
    from retrainer.workloads._nyc_flights import FLIGHTS

    with pytest.raises(ValueError, match="letters, digits and underscores"):
        RowRule("no spaces", "true", "x")
    with pytest.raises(ValueError, match="max_share 1"):
        RowRule("whole", "true", "x", max_share=1)
    import dataclasses

    with pytest.raises(ValueError, match="duplicate rule names"):
        dataclasses.replace(FLIGHTS, rules=FLIGHTS.rules[:1] * 2)
    assert {r.name for r in FLIGHTS.rules} >= {
        "arr_delay_is_arr_time_minus_scheduled",
        "time_hour_is_the_scheduled_hour",
    }
