"""A human summary of one run, read back from the run's folder and the MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrainer import registry
from retrainer.config import RunConfig
from retrainer.layout import RunLayout
from retrainer.workloads import get_workload


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    return "AUC {auc:.4f}  log loss {log_loss:.4f}  accuracy {accuracy:.4f}  Brier {brier:.4f}".format(**metrics)


def run_summary(cfg: RunConfig) -> str:
    layout = RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date)
    workload = get_workload(cfg.workload)
    val = _load(layout.validation / "summary.json")
    rejected = bool(val) and not val["success"]
    if rejected:  # the latest attempt stopped at validation: describe it, not an earlier good run's outputs
        feats = _load(layout.features_rejected / "features.json")
        train = ev = exp = reg = None
    else:
        feats = _load(layout.features_meta) or _load(layout.features_pending / "features.json")
        train, ev = _load(layout.training_meta), _load(layout.evaluation)
        exp, reg = _load(layout.export_meta), _load(layout.registration)
    lines = [f"retrainer run summary: workload {cfg.workload}, run date {cfg.run_date}", ""]
    if feats:
        lines += [
            f"  rows        train {feats['rows']['train']:>7,}  [{feats['train_range'][0]}, {feats['train_range'][1]})"
            f"  ({feats['excluded_no_label']['train']:,} without arrival excluded)",
            f"              eval  {feats['rows']['eval']:>7,}  [{feats['eval_range'][0]}, {feats['eval_range'][1]})"
            f"  ({feats['excluded_no_label']['eval']:,} without arrival excluded)",
        ]
    else:
        lines.append("  features    not built")
    if val:
        status = "passed" if val["success"] else "FAILED"
        lines.append(f"  validation  {status}: {sum(val['evaluated'].values())} expectations {val['evaluated']}")
        lines += [f"              - {f}" for f in val["failed"]]
    else:
        lines.append("  validation  not run")
    if train:
        last = train["history"][-1] if train["history"] else {}
        lines.append(
            f"  training    {len(train['history'])} epoch(s) on {train['strategy']} x{train['replicas']}, "
            f"final loss {last.get('loss', float('nan')):.4f}"
        )
    if ev:
        lines.append(f"  new model   {_fmt(ev['new'])}")
        champ = f"v{ev['champion_version']}: {_fmt(ev['champion'])}" if ev["champion"] else "none yet"
        lines.append(f"  champion    {champ}")
        lines.append(f"  decision    {'PROMOTE' if ev['promote'] else 'keep champion'} ({ev['reason']})")
    if reg:
        lines.append(
            f"  registered  {reg['registered_model']} v{reg['version']}"
            f"{' (reused)' if reg['reused_existing_version'] else ''}; promoted: {reg['promoted']}"
        )
    if rejected:
        lines.append("  stopped     at validation: nothing was trained, registered or promoted")
    current = registry.aliases(cfg.tracking_uri, workload.registered_model)
    unchanged = "" if reg else " (not changed by this run)"
    lines.append(f"  aliases     {', '.join(f'{a} -> v{v}' for a, v in sorted(current.items())) or '-'}{unchanged}")
    lines += ["", "  where:"]
    if exp:
        lines.append(
            f"    SavedModel   {exp['saved_model_uri']} (fresh-process check max |diff| {exp['max_abs_diff']:.2g})"
        )
    if val:
        lines.append(f"    Data Docs    {val['data_docs_uri']}")
    lines.append(f"    run folder   {layout.root}")
    lines.append(f"    MLflow       {cfg.tracking_uri}  (make mlflow-ui)")
    return "\n".join(lines)
