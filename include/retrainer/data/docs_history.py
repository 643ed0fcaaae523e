"""The gates' history of a workload: one page listing every run's raw gate and validation, newest first, each with
its verdict, what failed and a link to that run's Data Docs (``<data root>/data_docs/<workload>/index.html``).

Why: each gate writes a Data Docs site into its run's folder, so the Data Docs were one site per run and nothing
answered "when did this check start failing?" or "what did last Tuesday's validation say?". Great Expectations' own
way to a history is one site over one results store, rebuilt over every result so far on each run: a cost that grows
with the history. This page is rebuilt from the gates' small summaries instead (one JSON read per run folder), after
every gate, passed or failed, and links the runs' own sites; pruned runs drop out of it. Links are relative, so the
page works as a file and when the data root is served over HTTP.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
from pathlib import Path

from retrainer.core import atomic, locks
from retrainer.core.layout import RAW_GATE_DIR, RUN_PREFIX, VALIDATION_DIR, ValidationFiles
from retrainer.core.results import GateReport

log = logging.getLogger(__name__)

GATES = {RAW_GATE_DIR: "raw gate", VALIDATION_DIR: "validation"}
SHOWN_FAILURES = 3  # per gate on the page; the run's Data Docs have every one


def history_page(data_root: str | Path, workload: str) -> Path:
    return Path(data_root) / "data_docs" / workload / "index.html"


@dataclasses.dataclass(frozen=True)
class GateRun:
    """One gate of one run, as its summary recorded it."""

    date: str
    run: str
    gate: str
    report: GateReport
    written: float  # when the summary was written (the page's order within a date)
    docs: Path  # the run's Data Docs index


def gate_runs(data_root: str | Path, workload: str) -> list[GateRun]:
    """Every gate summary of the workload's run folders, newest run date first, then newest written first."""
    runs_dir = Path(data_root) / "runs" / workload
    found: list[GateRun] = []
    for folder in runs_dir.glob(f"date=*/{RUN_PREFIX}*") if runs_dir.is_dir() else []:
        for name, gate in GATES.items():
            files = ValidationFiles(folder / name)
            record = atomic.read_record(files.report) if files.report.is_file() else None
            if not isinstance(record, dict):
                continue  # no summary yet (or one cut short): the gate's own stage reports that
            found.append(GateRun(date=folder.parent.name.removeprefix("date="), run=folder.name, gate=gate,
                                 report=GateReport.from_dict(record), written=files.report.stat().st_mtime,
                                 docs=files.data_docs / "index.html"))  # fmt: skip
    return sorted(found, key=lambda g: (g.date, g.written), reverse=True)


def render(workload: str, gates: list[GateRun], page: Path) -> str:
    rows = []
    for g in gates:
        verdict = "passed" if g.report.success else f"FAILED ({len(g.report.failed)})"
        failures = "<br>".join(html.escape(line) for line in g.report.failed[:SHOWN_FAILURES])
        if len(g.report.failed) > SHOWN_FAILURES:
            failures += f"<br>... {len(g.report.failed) - SHOWN_FAILURES} more"
        warnings = f"{len(g.report.warnings)} warning(s)" if g.report.warnings else ""
        link = os.path.relpath(g.docs, page.parent)
        docs = f'<a href="{html.escape(link)}">Data Docs</a>' if g.docs.is_file() else "(no Data Docs)"
        rows.append(
            f'<tr class="{"ok" if g.report.success else "failed"}"><td>{g.date}</td><td>{html.escape(g.gate)}</td>'
            f"<td>{verdict}</td><td>{g.report.could_fail}</td><td>{failures}</td><td>{warnings}</td>"
            f"<td>{docs}</td><td><code>{html.escape(g.run)}</code></td></tr>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(workload)}: gates' history</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;vertical-align:top;text-align:left}tr.failed td{background:#fde2e1}</style></head><body>"
        f"<h1>{html.escape(workload)}: raw gate and validation, every run</h1>"
        f"<p>{len(gates)} gate result(s), newest first. Each run's Data Docs have every expectation and its observed "
        "values.</p><table><tr><th>run date</th><th>gate</th><th>verdict</th><th>checks that could fail</th>"
        "<th>failed</th><th>warnings</th><th>details</th><th>run folder</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


def update(data_root: str | Path, workload: str) -> Path | None:
    """Rebuild the workload's page (under a lock: two gates finishing together both end up on it). Never raises:
    the page is an index, not a gate; a failure to write it is logged and the gate's verdict stands."""
    page = history_page(data_root, workload)
    try:
        with locks.exclusive(page.parent / ".lock", "gates' history page", timeout_s=60):
            atomic.write_text(page, render(workload, gate_runs(data_root, workload), page))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("the gates' history page %s was not updated: %s: %s", page, type(exc).__name__, exc)
        return None
    return page
