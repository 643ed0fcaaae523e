"""The run's evidence report: one HTML page an operator can read before trusting the decision.

Why one page: the evidence for "should this model serve" was spread over a text summary, two Data Docs sites,
JSON files and the MLflow UI. The page gathers it: the decision and the rule that made it, the raw gate and
validation (with links to their Data Docs), drift against the champion, the metrics of the new model, the
champion and the baselines with intervals, the slice table, the plots, training, the serving check and what
each stage cost, and a link to the MLflow run. It is self-contained (the plots are embedded), so the copy
logged to the MLflow run reads the same as the one in the run folder. ``register`` writes it once the MLflow
run exists; ``retrainer report`` writes it again from the run folder.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import Any

from retrainer.core.costs import read_costs
from retrainer.core.layout import RunLayout
from retrainer.core.results import (
    STRATEGY_LABELS,
    EvaluationResult,
    ExportResult,
    FeaturesResult,
    RawGateResult,
    RegistrationResult,
    TrainingResult,
    ValidationResult,
)

TEMPLATE = "report.html.j2"  # beside this module (package data)


@dataclasses.dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    version: str | None = None


def mlflow_run_url(tracking_uri: str, experiment_id: str | None, run_id: str) -> str | None:
    """The MLflow UI's page of the run for a server URI; None for a local store (no UI to link to)."""
    if not tracking_uri.startswith(("http://", "https://")) or not experiment_id:
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def render(
    layout: RunLayout, workload: str, run_date: str, run_id: str, model: str, *,
    registration: RegistrationResult | None = None, mlflow_url: str | None = None,
) -> str:  # fmt: skip
    """The page for the run in ``layout`` from the results it holds (a stage that did not run is left out)."""
    import jinja2

    raw_gate = layout.load_optional(RawGateResult)
    features = layout.load_optional(FeaturesResult)
    validation = layout.load_optional(ValidationResult)
    training = layout.load_optional(TrainingResult)
    evaluation = layout.load_optional(EvaluationResult)
    export = layout.load_optional(ExportResult)
    registration = registration or layout.load_optional(RegistrationResult)
    if features is None and validation is not None:
        features = validation.features

    decision = None
    if registration is not None:
        decision = Decision(registration.promoted, registration.decision, registration.version)
    elif evaluation is not None:
        decision = Decision(evaluation.promote, f"evaluated, not registered yet: {evaluation.reason}")
    links: list[tuple[str, str]] = []
    if mlflow_url:
        links.append(("MLflow run", mlflow_url))
    elif registration is not None:
        links.append((f"MLflow run {registration.mlflow_run_id} ({registration.tracking_uri})",
                      f"#mlflow-run-{registration.mlflow_run_id}"))  # fmt: skip
    for name, result in (("raw gate Data Docs", raw_gate), ("validation Data Docs", validation)):
        if result is not None:
            links.append((name, result.report.data_docs_uri))
    metric_rows: list[tuple[str, dict[str, Any]]] = []
    if evaluation is not None:
        metric_rows.append(("new model", evaluation.new))
        if evaluation.champion:
            metric_rows.append((f"champion v{evaluation.champion_version}", evaluation.champion))
        metric_rows += [(f"baseline {name}", m) for name, m in evaluation.baselines.items()]
    metric_names = [k for k in (evaluation.new if evaluation else {}) if k != "rows"]
    drift = sorted(((validation.report.drift or {}).items() if validation else []), key=lambda kv: -kv[1])[:10]
    plots = [(Path(p).stem.replace("_", " "), base64.b64encode(Path(p).read_bytes()).decode("ascii"))
             for p in (evaluation.plots if evaluation else []) if Path(p).is_file()]  # fmt: skip
    env = jinja2.Environment(loader=jinja2.PackageLoader("retrainer.evaluation", "."), autoescape=True,
                             undefined=jinja2.StrictUndefined)  # fmt: skip
    return env.get_template(TEMPLATE).render(
        workload=workload, run_date=run_date, run_id=run_id, run_folder=str(layout.root), model=model,
        decision=decision, held_by=evaluation.held_by_slices if evaluation else [], links=links,
        raw_gate=raw_gate, validation=validation, features=features, drift=drift, evaluation=evaluation,
        metric_rows=metric_rows, metric_names=metric_names, slices=(evaluation.slices if evaluation else {}),
        overall=(evaluation.slices or {}).get("overall") if evaluation else None, plots=plots, training=training,
        export=export, costs=sorted(read_costs(layout.costs).items()), strategy_labels=STRATEGY_LABELS,
    )  # fmt: skip


def write_report(layout: RunLayout, html: str) -> Path:
    """The page into the run folder, atomically (a reader sees the old page or the new one)."""
    from retrainer.core import atomic

    atomic.write_text(layout.report, html)
    return layout.report
