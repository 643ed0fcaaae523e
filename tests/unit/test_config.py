"""The run parameters: declared once, validated, and carried to worker processes unchanged."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from retrainer.core import params
from retrainer.core.config import ConfigError, Engines, RunConfig, RunIdentity, Tuning, all_parameters


def test_config_to_argv_and_secret_env_to_config_is_the_identity(monkeypatch) -> None:
    cfg = RunConfig.build(
        "2013-06-08", "arrival_delay_minutes", dag_id="d", run_id="scheduled__2013-06-08T00:00:00+00:00",
        window_days=21, eval_days=5, epochs=4, batch_size=333, learning_rate=0.0123456789, hidden_units=17, seed=0,
        part_files=3, min_gain=-0.25, data_root="/tmp/a dir/with spaces",
        tracking_uri="http://ml:s3cret-pass@127.0.0.1:5000", spark_master="sc://127.0.0.1:15002/;token=s3cret-token",
        strategy="multi_worker", launcher="local_processes", num_workers=3,
    )  # fmt: skip
    argv = cfg.to_argv()
    assert not [a for a in argv if "s3cret" in a]  # credentials never on a command line
    assert cfg.secret_env() == {"MLFLOW_TRACKING_URI": cfg.engines.tracking_uri,
                                "RETRAINER_SPARK_MASTER": cfg.engines.spark_master}  # fmt: skip
    for name, value in cfg.secret_env().items():  # what a launched process has in its environment
        monkeypatch.setenv(name, value)
    assert RunConfig.from_argv(argv) == cfg
    defaults = RunConfig.build("2013-01-30")
    assert RunConfig.from_argv(defaults.to_argv()) == defaults


def test_every_parameter_reaches_the_argv_or_the_environment() -> None:
    cfg = RunConfig.build("2013-06-08")
    argv, env = cfg.to_argv(), cfg.secret_env()
    for p in all_parameters():
        assert (p.flag in argv) != (p.spec.env in env and p.spec.secret), p.name  # e.g. seed, once dropped


def test_the_three_groups_split_identity_tuning_and_engines() -> None:
    names = {g.__name__: {p.name for p in params.parameters(g)} for g in (RunIdentity, Tuning, Engines)}
    assert names["RunIdentity"] == {"date", "workload", "dag_id", "run_id"}
    assert {"epochs", "learning_rate", "window_days", "min_gain"} <= names["Tuning"]
    assert {"data_root", "tracking_uri", "spark_master", "launcher", "num_workers"} <= names["Engines"]
    model_defining = RunConfig.build("2013-06-08").tuning.model_defining()
    assert "epochs" in model_defining and "min_gain" not in model_defining  # the gate does not change the model


def test_engines_come_from_the_environment_unless_given(monkeypatch) -> None:
    monkeypatch.setenv("RETRAINER_SPARK_MASTER", "spark://example:7077")
    monkeypatch.setenv("RETRAINER_NUM_WORKERS", "2")
    monkeypatch.setenv("RETRAINER_LAUNCHER", "local_processes")
    cfg = RunConfig.build("2013-06-08")
    assert (cfg.engines.spark_master, cfg.engines.num_workers, cfg.engines.launcher) == (
        "spark://example:7077", 2, "local_processes",
    )  # fmt: skip
    assert RunConfig.build("2013-06-08", spark_master="local[2]").engines.spark_master == "local[2]"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        ({"window_days": 7, "eval_days": 7}, "window_days (7) must be larger than eval_days (7)"),
        ({"strategy": "gpu-please"}, "strategy must be one of"),
        ({"num_workers": 2}, "launcher in_process runs one worker, got num_workers=2"),
        ({"launcher": "local_processes", "num_workers": 2, "strategy": "default"}, "need strategy auto or multi"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"epochs": "many"}, "epochs: invalid literal"),
        ({"colour": "blue"}, "unknown run parameter(s) ['colour']"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.build("2013-06-08", **values)
    assert message in str(err.value)


def test_run_window_arithmetic() -> None:
    w = RunConfig.build("2013-06-01", window_days=28, eval_days=7).window
    assert (w.train_start, w.eval_start, w.end) == (dt.date(2013, 5, 4), dt.date(2013, 5, 25), dt.date(2013, 6, 1))
    assert w.days()[0] == w.train_start and w.days()[-1] == dt.date(2013, 5, 31) and len(w.days()) == 28
    assert w.raw_days(7)[0] == dt.date(2013, 4, 27)


def test_replace_changes_one_parameter_and_revalidates() -> None:
    cfg = RunConfig.build("2013-06-08")
    assert cfg.replace(hidden_units=12).tuning == dataclasses.replace(cfg.tuning, hidden_units=12)
    with pytest.raises(ConfigError):
        cfg.replace(hidden_units=1)
