"""A human summary of one run, read back through the layout and from the MLflow registry."""

from __future__ import annotations

from retrainer import registry
from retrainer.config import RunConfig
from retrainer.layout import RunLayout
from retrainer.results import (
    EvaluationResult,
    ExportResult,
    FeaturesResult,
    RegistrationResult,
    TrainingResult,
    ValidationReport,
)
from retrainer.workloads import get_workload


def run_summary(cfg: RunConfig) -> str:
    layout = RunLayout.of(cfg)
    workload = get_workload(cfg.run.workload)
    objective = workload.objective
    feats = layout.load_optional(FeaturesResult)
    report = layout.load_optional(ValidationReport)
    rejected = report is not None and not report.success
    if rejected:  # the latest attempt stopped at validation: describe it, not an earlier good run's outputs
        train = ev = exp = reg = None
    else:
        train, ev = layout.load_optional(TrainingResult), layout.load_optional(EvaluationResult)
        exp, reg = layout.load_optional(ExportResult), layout.load_optional(RegistrationResult)
    lines = [
        f"retrainer run summary: workload {cfg.run.workload} ({objective.name}), run date {cfg.run.date}",
        "",
    ]
    if feats:
        lines += [
            f"  rows        train {feats.rows['train']:>7,}  [{feats.train_range[0]}, {feats.train_range[1]})"
            f"  ({feats.excluded_no_label['train']:,} without label excluded)",
            f"              eval  {feats.rows['eval']:>7,}  [{feats.eval_range[0]}, {feats.eval_range[1]})"
            f"  ({feats.excluded_no_label['eval']:,} without label excluded)",
        ]
    else:
        lines.append("  features    not built")
    if report:
        status = "passed" if report.success else "FAILED"
        lines.append(f"  validation  {status}: {sum(report.evaluated.values())} expectations {report.evaluated}")
        lines += [f"              - {f}" for f in report.failed]
    else:
        lines.append("  validation  not run")
    if train:
        last = train.history[-1] if train.history else {}
        lines.append(
            f"  training    {len(train.history)} epoch(s) on {train.strategy} x{train.replicas} "
            f"({train.launcher}, {train.num_workers} worker(s)), final loss {last.get('loss', float('nan')):.4f}"
        )
    if ev:
        lines.append(f"  new model   {objective.describe(ev.new)}")
        champ = f"v{ev.champion_version}: {objective.describe(ev.champion)}" if ev.champion else "none yet"
        lines.append(f"  champion    {champ}")
        lines.append(f"  decision    {'PROMOTE' if ev.promote else 'keep champion'} ({ev.reason})")
    if reg:
        lines.append(
            f"  registered  {reg.registered_model} v{reg.version}"
            f"{' (reused)' if reg.reused_existing_version else ''}; promoted: {reg.promoted}"
        )
    if rejected:
        lines.append("  stopped     at validation: nothing was trained, registered or promoted")
    current = registry.aliases(cfg.engines.tracking_uri, workload.registered_model)
    unchanged = "" if reg else " (not changed by this run)"
    lines.append(f"  aliases     {', '.join(f'{a} -> v{v}' for a, v in sorted(current.items())) or '-'}{unchanged}")
    lines += ["", "  where:"]
    if exp:
        lines.append(f"    SavedModel   {exp.saved_model_uri} (fresh-process check max |diff| {exp.max_abs_diff:.2g})")
    if report:
        lines.append(f"    Data Docs    {report.data_docs_uri}")
    lines.append(f"    run folder   {layout.root}")
    lines.append(f"    MLflow       {cfg.engines.tracking_uri}  (make mlflow-ui)")
    return "\n".join(lines)
