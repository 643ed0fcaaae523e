"""Alerts and the champion announcement: what is kept, how it is named, what it never contains.
(Delivered by the real DAG under dag.test() in test_dag_e2e and by the scheduler in test_server_mode.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from retrainer.core.results import EvaluationResult, RegistrationResult
from retrainer.registry.champion_log import record_champions
from retrainer.registry.promotion import announcement
from retrainer.runners import alerts


def _alert(try_number: int = 1, message: str = "check_raw failed") -> alerts.Alert:
    return alerts.Alert(
        alerts.TASK_FAILED, dag_id="flight_delay_retrain", run_id="scheduled__2013-02-03T00:00:00+00:00",
        task_id="check_raw", try_number=try_number, run_date=dt.date(2013, 2, 3), message=message,
    )  # fmt: skip


def test_an_alert_is_one_json_file_per_event_and_try_and_a_repeat_replaces_it(tmp_path: Path) -> None:
    first = alerts.record(_alert(), tmp_path)
    assert first.parent == tmp_path / "_alerts" and first.name.startswith("2013-02-03.task_failed.")
    assert ":" not in first.name and "+" not in first.name  # the run id is made safe for a file name
    alerts.record(_alert(message="check_raw failed again"), tmp_path)  # the same callback delivered twice
    alerts.record(_alert(try_number=3), tmp_path)
    kept = alerts.recorded(tmp_path)
    assert [(a["try_number"], a["message"]) for a in kept] == [(1, "check_raw failed again"), (3, "check_raw failed")]
    assert alerts.recorded(tmp_path, alerts.CHAMPION_CHANGED) == []


def test_an_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown alert event 'paged'"):
        alerts.Alert("paged", "d", "r", "t", 1, None, "m")


def _registration(uri: str, before: str | None = "6") -> RegistrationResult:
    return RegistrationResult(
        registered_model="flight_delay", version="7", reused_existing_version=False, mlflow_run_id="abc",
        promoted=True, decision="PROMOTE: auc 0.71 > 0.70 + 0.001", aliases={"champion": "7"}, tracking_uri=uri,
        champion_before=before,
    )  # fmt: skip


def _evaluation() -> EvaluationResult:
    return EvaluationResult(
        headline="auc", higher_is_better=True, new={"auc": 0.71, "loss": 0.5}, champion={"auc": 0.70},
        champion_version="6", gain=0.01, min_gain=0.001, promote=True, reason="better",
        eval_range=("2013-02-01", "2013-02-03"),
    )  # fmt: skip


def test_the_announcement_names_the_version_and_its_metrics_without_credentials() -> None:
    news = announcement(_registration("postgresql://mlflow:s3cret@db:5432/mlflow"), _evaluation(), dt.date(2013, 2, 3))
    assert news["model_uri"] == "models:/flight_delay/7" and news["previous_version"] == "6"
    assert news["metrics"] == {"auc": 0.71, "loss": 0.5} and news["run_date"] == "2013-02-03"
    assert news["tracking_uri"] == "postgresql://mlflow:***@db:5432/mlflow"
    assert "s3cret" not in str(news)
    assert (
        announcement(_registration("http://127.0.0.1:5000"), _evaluation(), dt.date(2013, 2, 3))["tracking_uri"]
        == "http://127.0.0.1:5000"
    )


def test_the_champion_log_is_keyed_by_version(tmp_path: Path) -> None:
    news = announcement(_registration("http://mlflow:5000"), _evaluation(), dt.date(2013, 2, 3))
    (path,) = record_champions([news], tmp_path)
    assert path == tmp_path / "_champions" / "flight_delay" / "v7.json"
    record_champions([news, news], tmp_path)  # the same event twice: still one file
    assert [p.name for p in path.parent.iterdir()] == ["v7.json"]
    with pytest.raises(ValueError, match="not a registry name"):
        record_champions([{**news, "model": "../../etc"}], tmp_path)


def test_only_a_run_that_moved_the_alias_changed_the_champion() -> None:
    assert _registration("u", before="6").champion_changed and _registration("u", before=None).champion_changed
    assert not _registration("u", before="7").champion_changed  # a rerun: v7 already was champion


@pytest.mark.parametrize(("before", "says"), [(None, "(its first champion)"), ("6", "(was v6)")])
def test_the_champion_change_alert_says_what_it_replaced(before, says) -> None:
    """A first champion replaced nothing: the alert says so instead of "was vNone"."""
    import types

    from retrainer.runners.airflow_adapter import alert_from_context

    news = announcement(_registration("http://mlflow:5000", before=before), _evaluation(), dt.date(2013, 2, 3))
    ti = types.SimpleNamespace(task_id="publish_champion", try_number=1, xcom_pull=lambda task_ids: news)
    dag = types.SimpleNamespace(dag_id="flight_delay_retrain")
    context = {"ti": ti, "dag": dag, "run_id": "scheduled__2013-02-03T00:00:00+00:00", "logical_date": None}
    alert = alert_from_context(context, alerts.CHAMPION_CHANGED)
    assert f"champion is now v7 {says}: PROMOTE" in alert.message and "None" not in alert.message
