"""Stage 0, check-raw: the raw gate. Every landed day the run reads (history days included) and every
dimension table its features join, against the workload's raw contract, before any feature is built.

Each landed file is scanned by Spark once: its per-day statistics (rows, quarantined rows, nulls,
values out of range or category, rows dated in another day, duplicate keys, mean and spread of the
unit-checked columns) are kept beside it in ``_gate.<contract>.json`` with the file's digest. A
later run reuses the record while the digest matches; a changed file is scanned again. Rows that do
not parse go to ``quarantine/<source>/date=D/`` with the reason. The bounds themselves are applied
on every run, by Great Expectations, to the small per-day table: they are cheap, and the relative
ones (rows, unit shifts) compare each day with its neighbours in this run. Dimension tables are small and
read whole each run (:mod:`retrainer.data.dimension_gate`); their digests join the days' in the result's
file map (``dims/<name>``), which is what the features stage may read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.errors import BadData
from retrainer.core.fingerprint import file_digest
from retrainer.core.layout import ValidationFiles, raw_dim, raw_gate_record, raw_partition
from retrainer.core.results import RawGateResult
from retrainer.data import docs_history
from retrainer.data.dimension_gate import dimension_record, dimension_suite
from retrainer.data.gx_suites import run_suites
from retrainer.data.landed_files import DIMS, check_raw_inputs
from retrainer.data.raw_gate_suite import day_suite
from retrainer.data.raw_scan import scan_days, source_fingerprint
from retrainer.spec.raw_contract import RawContract
from retrainer.stages import costed
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)


class RawDataRejected(BadData):
    """Landed days broke the raw contract; the message names each source, day, check and value."""


@dataclasses.dataclass
class _Records:
    """The per-day records of the run's landed files, and which were scanned now or reused."""

    by_source: dict[str, dict[str, dict[str, Any]]] = dataclasses.field(default_factory=dict)
    digests: dict[str, str] = dataclasses.field(default_factory=dict)
    scanned: list[str] = dataclasses.field(default_factory=list)
    reused: int = 0


def _records(cfg: RunConfig, contract: RawContract, days: list[dt.date]) -> _Records:
    """Reuse each day's record while its file's digest and the source's fingerprint match; scan the rest."""
    root, out = cfg.engines.data_root, _Records()
    for source in contract.sources:
        fingerprint = source_fingerprint(source)
        todo: dict[dt.date, str] = {}
        out.by_source[source.name] = {}
        for day in days:
            digest = file_digest(raw_partition(root, source.name, day))
            out.digests[f"{source.name}/{day}"] = digest
            record_path = raw_gate_record(root, source.name, day, contract.name)
            record = atomic.read_record(record_path)
            if isinstance(record, dict) and record.get("digest") == digest and record.get("contract") == fingerprint:
                out.by_source[source.name][day.isoformat()] = record
                out.reused += 1
            else:
                todo[day] = digest
        if todo:
            fresh = scan_days(cfg.engines.spark_master, root, source, todo)
            for day, digest in todo.items():
                record = fresh[day.isoformat()] | {"digest": digest, "contract": fingerprint}
                atomic.write_json(raw_gate_record(root, source.name, day, contract.name), record)
                out.by_source[source.name][day.isoformat()] = record
                out.scanned.append(f"{source.name}/{day}")
    return out


@costed("check_raw")
def check_raw_days(run: RunContext | RunConfig) -> RawGateResult:
    """Gate the raw days of the run; raises :class:`RawDataRejected` naming every failed check."""
    run = RunContext.of(run)
    cfg = run.config
    contract = run.workload.raw
    days = check_raw_inputs(cfg)  # missing partitions are named before Spark starts
    layout = run.layout
    layout.discard(RawGateResult)
    records = _records(cfg, contract, days)

    dims = {d.name: dimension_record(raw_dim(cfg.engines.data_root, d.name), d) for d in contract.dimensions}
    records.digests |= {f"{DIMS}/{name}": record["digest"] for name, record in dims.items()}
    with atomic.staged_dir(layout.raw_gate) as staging:
        suites = [day_suite(source, records.by_source[source.name], contract) for source in contract.sources]
        suites += [dimension_suite(d, dims[d.name], f"{DIMS}/{d.name}.csv") for d in contract.dimensions]
        report = run_suites(suites, f"{contract.name}.raw", ValidationFiles(staging), ValidationFiles(layout.raw_gate))
        atomic.write_json(ValidationFiles(staging).report, report.to_dict())
    docs_history.update(cfg.engines.data_root, cfg.run.workload)  # passed or not: the gates' history page
    quarantined = {
        f"{s}/{d}": r["quarantined"]
        for s, by_day in records.by_source.items()
        for d, r in sorted(by_day.items())
        if r["quarantined"]
    }
    if not report.success:
        raise RawDataRejected(
            f"raw gate: {len(report.failed)} check(s) failed for the landed days of run {cfg.run.date} "
            f"(results: {report.results_uri}, Data Docs: {report.data_docs_uri}):\n  " + "\n  ".join(report.failed)
        )
    result = RawGateResult(
        workload=cfg.run.workload,
        run_date=cfg.run.date,
        files=records.digests,
        scanned=records.scanned,
        reused=records.reused,
        quarantined=quarantined,
        report=report,
    )
    layout.save(result)
    log.info(
        "raw gate passed: %d landed files (%d scanned, %d unchanged since checked), %d checks; quarantined rows: %s",
        len(records.scanned) + records.reused, len(records.scanned), records.reused, sum(report.evaluated.values()),
        quarantined or "none",
    )  # fmt: skip
    return result
