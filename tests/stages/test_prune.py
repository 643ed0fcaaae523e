"""Retention (``retrainer prune``): registered versions' run folders, the newest runs and anything recent stay;
run folders that registered nothing, interrupted writes' leftovers and stores of other code go; nothing goes
when the registry cannot be read."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from retrainer import registry
from retrainer.core.layout import RunLayout
from retrainer.data.feature_store import store_root
from retrainer.stages.prune import prune
from retrainer.stages.register import RUN_FOLDER_TAG
from retrainer.workloads import get_workload

WORKLOAD = "flight_delay"
HOUR = 3600.0


def _age(path: Path, hours: float) -> None:
    """Set the modification time of ``path`` and everything under it to ``hours`` ago."""
    when = time.time() - hours * HOUR
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))


def _run(root: Path, day: int, run_id: str, hours: float) -> Path:
    layout = RunLayout.for_run(root, WORKLOAD, dt.date(2013, 2, day), run_id)
    (layout.root / "features").mkdir(parents=True)
    (layout.root / "features" / "part-0.parquet").write_bytes(b"x" * 1000)
    _age(layout.root, hours)
    return layout.root


@pytest.fixture
def data(tmp_path: Path) -> dict:
    root = tmp_path / "data"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {
        "champion": _run(root, 1, "a", 240),
        "registered": _run(root, 2, "b", 216),
        "failed_old": _run(root, 3, "c", 192),
        "failed": _run(root, 4, "d", 48),
        "recent": _run(root, 5, "e", 2),
        "in_flight": _run(root, 6, "f", 3),
    }
    client = registry.configure(tracking)
    model = get_workload(WORKLOAD).registered_model
    client.create_registered_model(model)
    for name in ("champion", "registered"):
        folder = runs[name].relative_to(root).as_posix()
        v = client.create_model_version(model, source=str(runs[name]), tags={RUN_FOLDER_TAG: folder})
        if name == "champion":
            client.set_registered_model_alias(model, "champion", v.version)
    old_write = runs["champion"] / ".validation.tmp-0a1b2c3d"  # a killed attempt's staged folder
    old_write.mkdir()
    _age(runs["champion"], 240)  # the folder and the leftover in it, as a crash long ago left them
    new_write = runs["in_flight"] / ".export.tmp-4e5f6a7b"  # a write in progress: the newest change
    new_write.mkdir()
    store = store_root(root, get_workload(WORKLOAD))
    (store / "flight_date=2013-02-01").mkdir(parents=True)
    staging = store / "_staging-12345678"
    staging.mkdir()
    _age(staging, 100)
    other_code = store.parent / "v=0123456789ab"
    (other_code / "flight_date=2013-02-01").mkdir(parents=True)
    _age(other_code, 100)
    return {"root": root, "tracking": tracking, "runs": runs, "old_write": old_write, "new_write": new_write,
            "store": store, "staging": staging, "other_code": other_code}  # fmt: skip


def _rel(data: dict, path: Path) -> str:
    return path.relative_to(data["root"]).as_posix()


def test_prune_keeps_evidence_newest_and_recent_and_removes_the_rest(data: dict) -> None:
    root, runs = data["root"], data["runs"]
    gone = [runs["failed_old"], runs["failed"], data["old_write"], data["staging"], data["other_code"]]

    plan = prune(root, WORKLOAD, data["tracking"], keep_last=1, min_age_s=24 * HOUR, dry_run=True)
    assert sorted(plan.pruned) == sorted(_rel(data, p) for p in gone)
    assert all(p.exists() for p in gone)  # a dry run removes nothing
    assert plan.kept[_rel(data, runs["champion"])] == "registered as flight_delay v1 (champion)"
    assert plan.kept[_rel(data, runs["registered"])] == "registered as flight_delay v2"
    assert plan.kept[_rel(data, runs["in_flight"])] == "one of the newest 1 runs"
    assert plan.kept[_rel(data, runs["recent"])].startswith("changed in the last 24 h")
    assert plan.freed_bytes >= 2000

    done = prune(root, WORKLOAD, data["tracking"], keep_last=1, min_age_s=24 * HOUR)
    assert done.pruned == plan.pruned and not done.dry_run
    assert not any(p.exists() for p in gone)
    assert not runs["failed_old"].parent.exists()  # its date folder held nothing else
    for kept in (runs["champion"], runs["registered"], runs["recent"], runs["in_flight"], data["new_write"]):
        assert kept.is_dir()
    assert (data["store"] / "flight_date=2013-02-01").is_dir()  # the current store's days
    assert prune(root, WORKLOAD, data["tracking"], keep_last=1, min_age_s=24 * HOUR).pruned == {}


def test_nothing_is_removed_when_the_registry_cannot_be_read(data: dict, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(registry.RegistryUnavailable, match="could not read the versions of flight_delay"):
        prune(data["root"], WORKLOAD, "http://127.0.0.1:9", keep_last=0, min_age_s=HOUR)
    assert all(p.exists() for p in data["runs"].values()) and data["staging"].exists()


def test_the_cli_prunes_with_the_deployments_settings(data: dict, monkeypatch, capsys) -> None:
    import json

    from retrainer.runners.cli import main

    monkeypatch.setenv("RETRAINER_KEEP_RUNS", "3")
    argv = ["prune", "--workload", WORKLOAD, "--dry-run", "--data-root", str(data["root"])]
    assert main([*argv, "--tracking-uri", data["tracking"]]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and _rel(data, data["runs"]["failed"]) in plan["kept"]  # the 3rd newest now
    assert plan["kept"][_rel(data, data["runs"]["failed"])] == "one of the newest 3 runs"
    assert _rel(data, data["runs"]["failed_old"]) in plan["pruned"]
