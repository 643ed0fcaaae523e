"""A human summary of one run, read back through the layout and from the MLflow registry."""

from __future__ import annotations

from typing import Any

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.costs import STAGES, StageCost, read_costs
from retrainer.core.layout import RunLayout, ValidationFiles
from retrainer.core.results import (
    STRATEGY_LABELS,
    EvaluationResult,
    ExportResult,
    FeaturesResult,
    GateReport,
    RawGateResult,
    RegistrationResult,
    TrainingResult,
)
from retrainer.data.landed_files import DIMS
from retrainer.workloads import get_workload


def _raw_gate_report(layout: RunLayout) -> GateReport | None:
    path = ValidationFiles(layout.raw_gate).report
    return GateReport.from_dict(atomic.read_json(path)) if path.exists() else None


def _checks(report: GateReport) -> str:
    status = "passed" if report.success else f"FAILED ({len(report.failed)} failed)"
    extra = f", {report.by_construction} more hold by construction" if report.by_construction else ""
    return f"{status}: {report.could_fail} checks that could fail{extra}; {len(report.warnings)} warning(s)"


def run_summary(cfg: RunConfig, layout: RunLayout | None = None) -> str:
    """What ``make run`` prints after the DAG: each stage's outcome, the decision, and where things are.
    ``layout``: another folder than the config's (the newest run of the date, for a DAG run's summary)."""
    layout = layout or RunLayout.of(cfg)
    workload = get_workload(cfg.run.workload)
    objective = workload.objective
    gate_report = _raw_gate_report(layout)
    gate_rejected = gate_report is not None and not gate_report.success
    feats = None if gate_rejected else layout.load_optional(FeaturesResult)
    report = None if gate_rejected else layout.load_optional(GateReport)
    rejected = gate_rejected or (report is not None and not report.success)
    if rejected:  # the latest attempt stopped at a gate: describe it, not an earlier good run's outputs
        train = ev = exp = reg = None
    else:
        train, ev = layout.load_optional(TrainingResult), layout.load_optional(EvaluationResult)
        exp, reg = layout.load_optional(ExportResult), layout.load_optional(RegistrationResult)
    lines = [
        f"retrainer run summary: workload {cfg.run.workload} ({objective.name}), run date {cfg.run.date}",
        "",
        *_gate_lines(gate_report, layout.load_optional(RawGateResult)),
        *_data_lines(feats, report, gate_rejected),
        *_model_lines(train, ev, reg, objective),
    ]
    if rejected:
        where = "the raw gate" if gate_rejected else "validation"
        lines.append(f"  stopped     at {where}: nothing was trained, registered or promoted")
    current = registry.aliases(cfg.engines.tracking_uri, workload.registered_model)
    unchanged = "" if reg else " (not changed by this run)"
    lines.append(f"  aliases     {', '.join(f'{a} -> v{v}' for a, v in sorted(current.items())) or '-'}{unchanged}")
    lines += _cost_lines(read_costs(layout.costs))
    lines += ["", "  where:"]
    if exp:
        lines.append(f"    SavedModel   {exp.saved_model_uri} (fresh-process check max |diff| {exp.max_abs_diff:.2g})")
        if exp.latency_ms:
            timing = [f"{b} row(s) p50 {t['p50']:.1f} / p99 {t['p99']:.1f} ms" for b, t in exp.latency_ms.items()]
            lines.append(f"                 serving: {', '.join(timing)}; {exp.saved_model_bytes / 2**20:.1f} MiB")
        if exp.tflite_uri:
            lines.append(f"    TF Lite      {exp.tflite_uri} ({exp.tflite_bytes / 1024:.0f} KiB; max |diff| "
                         f"{exp.tflite_max_abs_diff:.2g} against the SavedModel on the same rows)")  # fmt: skip
        elif exp.tflite_note:
            lines.append(f"    TF Lite      none: {exp.tflite_note}")
    if gate_report:
        lines.append(f"    raw gate     {gate_report.data_docs_uri}")
    if report:
        lines.append(f"    Data Docs    {report.data_docs_uri}")
    if layout.report.is_file():
        lines.append(f"    report       {layout.report.as_uri()}")
    lines.append(f"    run folder   {layout.root}")
    lines.append(f"    MLflow       {cfg.engines.tracking_uri}  (make mlflow-ui)")
    return "\n".join(lines)


def _cost_lines(costs: dict[str, StageCost]) -> list[str]:
    """Wall seconds per stage of this attempt (records older than its raw gate are an earlier run's)."""
    if not costs:
        return []
    start = costs["check_raw"].started_at if "check_raw" in costs else ""
    mine = sorted((c for c in costs.values() if c.started_at >= start),
                  key=lambda c: STAGES.index(c.stage) if c.stage in STAGES else len(STAGES))  # fmt: skip
    stages = ", ".join(f"{c.stage} {c.wall_s:.1f} s{'' if c.ok else ' (failed)'}" for c in mine)
    cpu, peak = sum(c.cpu_s for c in mine), max(c.peak_rss_mib for c in mine)
    return [f"  cost        {stages}", f"              wall per stage; {cpu:.1f} s CPU in all; peak {peak:,.0f} MiB"]


def _gate_lines(gate_report: GateReport | None, gate: RawGateResult | None) -> list[str]:
    if not gate_report:
        return ["  raw gate    not run"]
    lines = [f"  raw gate    {_checks(gate_report)}"]
    if gate:
        quarantined = ", ".join(f"{k} {n}" for k, n in gate.quarantined.items()) or "none"
        days = len(gate.scanned) + gate.reused
        dims = sorted(k.split("/", 1)[1] for k in gate.files if k.startswith(f"{DIMS}/"))
        lines.append(
            f"              {days} landed files: {len(gate.scanned)} scanned, {gate.reused} unchanged"
            f" since checked; quarantined rows: {quarantined}"
            + (f"; dimension tables read whole: {', '.join(dims)}" if dims else "")
        )
    return lines + [f"              - {f}" for f in gate_report.failed]


def _data_lines(feats: FeaturesResult | None, report: GateReport | None, gate_rejected: bool) -> list[str]:
    if feats:
        lines = [
            f"  rows        train {feats.rows['train']:>7,}  [{feats.train_range[0]}, {feats.train_range[1]})"
            f"  ({feats.excluded_no_label['train']:,} without label excluded)",
            f"              eval  {feats.rows['eval']:>7,}  [{feats.eval_range[0]}, {feats.eval_range[1]})"
            f"  ({feats.excluded_no_label['eval']:,} without label excluded)",
        ]
    else:
        lines = ["  features    not built"]
    if report:
        lines.append(f"  validation  {_checks(report)}")
        if report.days_checked or report.days_reused:
            lines.append(
                f"              rows of {report.days_checked} day(s) checked now, {report.days_reused} checked before"
            )
        lines += [f"              - {f}" for f in report.failed]
        lines += [f"              ! {w}" for w in report.warnings]
        if report.drift:
            top = sorted(report.drift.items(), key=lambda kv: -kv[1])[:5]
            lines.append(
                f"  drift       PSI against {report.drift_baseline}, largest: "
                + ", ".join(f"{c} {v:.3g}" for c, v in top)
            )
        else:
            lines.append(f"  drift       {report.drift_baseline or 'not measured'}")
    elif not gate_rejected:
        lines.append("  validation  not run")
    return lines


def strategy_label(name: str) -> str:
    """tf.distribute's class name as people call the strategy (:data:`retrainer.core.results.STRATEGY_LABELS`)."""
    return STRATEGY_LABELS.get(name, name)


def slice_lines(report: dict[str, Any]) -> list[str]:
    """The slice gate in two lines: the headline's interval overall, how many slices were gated, and (with a
    champion) the gated slice where the new model fell furthest behind it."""
    if not report:
        return []
    name, overall, slices = report["headline"], report["overall"], report["slices"]
    gated = [s for s in slices if s["gated"]]
    low, high = overall.get("new_interval") or (float("nan"), float("nan"))
    lines = [
        f"  slices      {name} {overall.get('new', float('nan')):.4f} [95% {low:.4f}, {high:.4f}] overall; "
        f"{len(gated)} slice(s) gated, {len(slices) - len(gated)} reported only "
        f"(under {report['min_rows']} rows or one class)"
    ]
    compared = [s for s in gated if s.get("drop") is not None]
    if compared and max(s["drop"] for s in compared) == 0:
        lines.append("              no gated slice scored below the champion")
    elif compared:
        worst = max(compared, key=lambda s: s["drop"])
        verdict = "holds the run" if worst["holds"] else f"within max_slice_drop {report['max_drop']:.1%}"
        lines.append(
            f"              largest drop {worst['slice']}={worst['value']}: {worst['new']:.4f} vs champion "
            f"{worst['champion']:.4f} ({worst['drop']:.1%}, {verdict})"
        )
    return lines


def _model_lines(
    train: TrainingResult | None, ev: EvaluationResult | None, reg: RegistrationResult | None, objective: Any
) -> list[str]:
    lines = []
    if train:
        last = f", last loss {train.history[-1]['loss']:.4f}" if train.history else ", nothing left to train (resumed)"
        lines.append(
            f"  training    {train.epochs_trained} epoch(s) on {strategy_label(train.strategy)} x{train.replicas} "
            f"({train.launcher}, {train.num_workers} worker(s)){last}"
        )
        if train.validation_range:
            chosen = [f"{name} {epochs}" for name, epochs in train.member_epochs.items()]
            scores = [f"{k} {v:.4f}" for k, v in train.best_validation.items()]
            lines.append(
                f"              epochs per member {', '.join(chosen)}, by {', '.join(scores)} on "
                f"[{train.validation_range[0]}, {train.validation_range[1]}); fitted on {train.fit_rows:,} rows"
            )
    if ev:
        lines.append(f"  new model   {objective.describe(ev.new)}")
        for name, metrics in ev.baselines.items():
            lines.append(f"  baseline    {objective.describe(metrics)}  {name} (scikit-learn, same rows)")
        champ = f"v{ev.champion_version}: {objective.describe(ev.champion)}" if ev.champion else "none yet"
        lines.append(f"  champion    {champ}")
        if ev.compared_range and ev.new_compared:  # the champion trained on some of the evaluation days
            lines.append(f"              on [{ev.compared_range[0]}, {ev.compared_range[1]}) only, where the new model "
                         f"scored {objective.describe(ev.new_compared)}")  # fmt: skip
        lines += slice_lines(ev.slices)
        lines.append(f"  decision    {'PROMOTE' if ev.promote else 'keep champion'} ({ev.reason})")
    if reg:
        lines.append(
            f"  registered  {reg.registered_model} v{reg.version}"
            f"{' (reused)' if reg.reused_existing_version else ''}; promoted: {reg.promoted}"
        )
    return lines
