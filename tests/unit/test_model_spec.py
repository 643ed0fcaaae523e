"""The model is declared on the workload; a run may train a subset of its members, never an unknown one."""

from __future__ import annotations

import pytest

from retrainer.core.config import ConfigError, RunConfig
from retrainer.spec.model_spec import Member, ModelSpec
from retrainer.workloads import get_workload, workload_names


def test_every_workload_declares_its_model_and_the_flights_model_is_the_three_member_ensemble() -> None:
    for name in workload_names():
        assert get_workload(name).model.members
    spec = get_workload("flight_delay").model
    assert spec.member_names == ("warm_linear", "adagrad_wide", "joint")
    assert [m.warm_start_epochs for m in spec.members] == [30, 0, 0]
    assert [m.wide_optimizer for m in spec.members] == ["adam", "adagrad", "adam"]


def test_a_run_selects_members_in_declared_order_and_all_keeps_the_ensemble() -> None:
    spec = get_workload("flight_delay").model
    assert spec.select("all") is spec
    assert spec.select("joint,warm_linear").member_names == ("warm_linear", "joint")
    with pytest.raises(ValueError, match=r"unknown \['deep'\]; this model declares"):
        spec.select("joint,deep")
    with pytest.raises(ValueError, match="unique member names"):
        ModelSpec(members=(Member("a"), Member("a")))


def test_the_members_parameter_is_checked_by_shape_and_changes_the_model() -> None:
    cfg = RunConfig.build("2013-02-05", members="joint")
    assert cfg.tuning.model_defining()["members"] == "joint"
    assert RunConfig.build("2013-02-05").tuning.members == "all"
    with pytest.raises(ConfigError, match="members must match"):
        RunConfig.build("2013-02-05", members="Joint; rm -rf /")


def test_an_unknown_member_is_a_configuration_error_before_training(tmp_path) -> None:
    from retrainer.training.worker import model_spec

    with pytest.raises(ConfigError, match=r"unknown \['wide_only'\]"):
        model_spec(RunConfig.build("2013-02-05", data_root=str(tmp_path), members="wide_only"))
    assert model_spec(RunConfig.build("2013-02-05", members="adagrad_wide")).member_names == ("adagrad_wide",)
