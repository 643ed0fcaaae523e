"""Extra links of the retrain DAG's tasks: the MLflow run, the model version, the evidence report, the Data Docs.

Airflow 3 evaluates the links an operator carries in the task's own process as the task ends (success or failure)
and stores each as an XCom under the link's key; the UI and the REST API (``.../taskInstances/{task}/links``) read
those XComs, so no link code runs in the API server and no plugin registration is needed. The links are set on the
task instances the DAG builds (TaskFlow tasks have no class of their own to declare them on); which task shows which
is :data:`retrainer.runners.task_links.TASK_LINKS`, and what each points at is worked out there from the run folder.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from airflow.sdk import BaseOperatorLink


@attrs.define()
class RunLink(BaseOperatorLink):
    """One named link of the task's run; ``workload`` is the DAG's (the run folder is found from it and the task's
    context, as the task itself found it)."""

    link_name: str
    workload: str

    @property
    def name(self) -> str:
        return self.link_name

    @property
    def xcom_key(self) -> str:
        return "_link_retrainer_" + re.sub(r"\W+", "_", self.link_name.lower())

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """Airflow's finalize passes the running task instance as ``ti_key``: its context gives the run. Anything
        else (a caller with only a key) gets no link rather than a guess."""
        context_of = getattr(ti_key, "get_template_context", None)
        if context_of is None:
            return ""
        import logging

        from retrainer.runners.airflow_adapter import run_context
        from retrainer.runners.task_links import link

        try:
            run = run_context(context_of(), self.workload)
        except Exception as exc:  # noqa: BLE001 - a run whose params are invalid failed for that; it has no folder
            logging.getLogger(__name__).warning("no %r link: %s", self.link_name, exc)
            return ""
        return link(self.link_name, run)


def with_links(task: Any, workload: str) -> Any:
    """``task`` (an operator, or a TaskFlow call's XComArg) with the links its task id shows; returned as given."""
    from retrainer.runners.task_links import TASK_LINKS

    operator = getattr(task, "operator", task)
    names = TASK_LINKS.get(operator.task_id, ())
    if names:
        operator.operator_extra_links = tuple(RunLink(name, workload) for name in names)
    return task
