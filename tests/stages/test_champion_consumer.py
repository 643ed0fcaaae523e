"""The downstream DAG's consumer against the real MLflow registry: it acts only on the champion of now,
whatever order the events come in, and never on a guess when the registry cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrainer import registry
from retrainer.core import atomic
from retrainer.registry.champion_log import CURRENT, act_on_champions, champion_log_folder

MODEL = "consumer_model"


def _news(version: str) -> dict:
    return {
        "model": MODEL,
        "version": version,
        "model_uri": f"models:/{MODEL}/{version}",
        "run_date": "2013-02-0" + version,
    }


@pytest.fixture
def tracking(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = registry.configure(uri)
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source=str(tmp_path / "artefact"))
    return uri


def test_events_in_completion_order_act_only_on_the_champion_of_now(tracking: str, tmp_path: Path) -> None:
    client = registry.configure(tracking)
    client.set_registered_model_alias(MODEL, registry.CHAMPION, "3")
    # v3's run finished first, v2's (an earlier promotion whose run was slower) after it
    done = act_on_champions([_news("3"), _news("2")], tmp_path, tracking)
    assert done == {"acted": [f"{MODEL} v3"], "skipped": [f"{MODEL} v2"]}
    folder = champion_log_folder(tmp_path, MODEL)
    assert atomic.read_json(folder / CURRENT)["version"] == "3"  # the late v2 event did not roll it back
    assert sorted(p.name for p in folder.glob("v*.json")) == ["v2.json", "v3.json"]  # both in the history

    again = act_on_champions([_news("3")], tmp_path, tracking)  # the same event delivered twice: same result
    assert again["acted"] == [f"{MODEL} v3"] and atomic.read_json(folder / CURRENT)["version"] == "3"

    client.delete_registered_model_alias(MODEL, registry.CHAMPION)  # no champion now: nothing is acted on
    assert act_on_champions([_news("1")], tmp_path, tracking) == {"acted": [], "skipped": [f"{MODEL} v1"]}
    assert atomic.read_json(folder / CURRENT)["version"] == "3"


def test_an_unreadable_registry_fails_the_task_instead_of_acting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail now; Airflow's retries are the retry
    closed = "http://127.0.0.1:9"  # the discard port: nothing answers
    with pytest.raises(registry.RegistryUnavailable):
        act_on_champions([_news("3")], tmp_path, closed)
    assert not (champion_log_folder(tmp_path, MODEL) / CURRENT).exists()
