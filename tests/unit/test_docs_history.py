"""The gates' history page of a workload, from run folders' gate summaries (written by the real gates in
tests/e2e/test_dag_e2e.py)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from retrainer.core import atomic
from retrainer.core.layout import RunLayout, ValidationFiles
from retrainer.core.results import GateReport
from retrainer.data import docs_history

WORKLOAD = "flight_delay"


def _gate(folder: Path, failed: list[str], when: float) -> None:
    report = GateReport(success=not failed, failed=failed, evaluated={"s": 10}, results_uri="",
                        data_docs_uri=(folder / "data_docs" / "index.html").as_uri())  # fmt: skip
    files = ValidationFiles(folder)
    atomic.write_json(files.report, report.to_dict())
    files.data_docs.mkdir(parents=True)
    (files.data_docs / "index.html").write_text("<html></html>")
    os.utime(files.report, (when, when))


def test_every_runs_gates_newest_first_with_failures_and_links_to_their_data_docs(tmp_path: Path) -> None:
    old = RunLayout.for_run(tmp_path, WORKLOAD, dt.date(2013, 6, 1), "scheduled__a")
    new = RunLayout.for_run(tmp_path, WORKLOAD, dt.date(2013, 6, 2), "scheduled__b")
    _gate(old.raw_gate, [], 100)
    _gate(old.validation, [], 110)
    _gate(new.raw_gate, [f"[flights] <dep_delay> null share {i}" for i in range(5)], 200)
    page = docs_history.update(tmp_path, WORKLOAD)
    assert page == tmp_path / "data_docs" / WORKLOAD / "index.html"
    text = page.read_text()
    rows = re.findall(r"<tr class=\"(\w+)\"><td>([\d-]+)</td><td>([\w ]+)</td>", text)
    assert rows == [("failed", "2013-06-02", "raw gate"), ("ok", "2013-06-01", "validation"),
                    ("ok", "2013-06-01", "raw gate")]  # fmt: skip
    assert "FAILED (5)" in text and "&lt;dep_delay&gt; null share 2" in text and "... 2 more" in text
    links = re.findall(r'href="([^"]+)"', text)
    assert len(links) == 3 and all((page.parent / link).resolve().is_file() for link in links)  # relative, resolving


def test_a_page_that_cannot_be_written_leaves_the_gate_alone(tmp_path: Path, caplog) -> None:
    (tmp_path / "data_docs").write_text("a file where the folder should be")
    assert docs_history.update(tmp_path, WORKLOAD) is None
    assert "gates' history page" in caplog.text
