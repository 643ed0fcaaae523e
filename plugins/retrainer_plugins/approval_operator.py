"""A person approves a promotion before the champion moves: Airflow's ``ApprovalOperator`` (the standard
provider's human-in-the-loop operator) showing the run's decision record.

In the DAG only when the deployment sets ``RETRAINER_REQUIRE_APPROVAL=yes`` (read at parse time, like the
training queue), between ``export`` and ``register``. The task waits in ``awaiting_input`` for an answer in the
UI or over the REST API. Approve: ``register`` runs and gets the answer (who, when), which it records in the
decision. Reject: ``register`` is skipped, so nothing is registered and the champion stays. No answer within
``RETRAINER_APPROVAL_TIMEOUT_MINUTES``: the default, Reject. When the gate itself said "do not promote" there is
nothing to approve: the task returns at once and ``register`` records the version as challenger, as without
approval. ``register`` checks the answer again under the promotion lock (``promotion.approval_hold``), so a run
that never asked cannot promote in such a deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

NOTHING_TO_APPROVE = {"chosen_options": [], "nothing_to_approve": True}


class PromotionApprovalOperator(ApprovalOperator):
    """Ask whether the run's model may become champion; the body is the evaluation's decision record."""

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "evaluation")
    ui_color = "#fbbc04"

    def __init__(self, *, workload: str, evaluation: Any, timeout_minutes: float, **kwargs: Any) -> None:
        super().__init__(
            subject=f"Promote the new {workload} model to champion?",
            body="The decision record is shown when the run reaches this task.",
            defaults="Reject",  # what a time-out answers
            response_timeout=timedelta(minutes=timeout_minutes),
            **kwargs,
        )
        self.workload = workload
        self.evaluation = evaluation

    def execute(self, context: Any) -> Any:
        from retrainer.core.results import EvaluationResult
        from retrainer.runners.airflow_adapter import received

        evaluation = received(self.evaluation, EvaluationResult)
        if not evaluation.promote:
            self.log.info("the gate did not promote this run (%s): nothing to approve", evaluation.reason)
            return NOTHING_TO_APPROVE
        self.body = decision_record(evaluation, context)
        return super().execute(context)


def decision_record(evaluation: Any, context: Any) -> str:
    """Markdown for the approver: the run, the decision and its reason, the metrics beside the champion, and
    the slices (the gated ones that dropped most)."""
    run, (first, end) = context.get("dag_run"), evaluation.eval_range
    lines = [
        f"**Run** `{getattr(run, 'run_id', '?')}`, evaluated on [{first}, {end})",
        "",
        f"**Gate**: promote: {evaluation.reason}",
        "",
        f"- new model: {_metrics(evaluation.new)}",
    ]
    if evaluation.champion:
        lines.append(f"- champion v{evaluation.champion_version}: {_metrics(evaluation.champion)}")
    for name, metrics in evaluation.baselines.items():
        lines.append(f"- baseline {name}: {_metrics(metrics)}")
    gated = [s for s in (evaluation.slices or {}).get("slices", []) if s.get("gated") and s.get("drop") is not None]
    if gated:
        lines += ["", "**Largest slice drops against the champion**:"]
        for s in sorted(gated, key=lambda s: -s["drop"])[:3]:
            lines.append(f"- {s['slice']}={s['value']} ({s['rows']} rows): {s['new']:.4f} vs {s['champion']:.4f}")
    lines += ["", "Approve to move `champion` to this run's version; Reject (or no answer) keeps the champion."]
    return "\n".join(lines)


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "rows" and isinstance(v, float))
