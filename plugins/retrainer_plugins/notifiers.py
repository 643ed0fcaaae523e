"""Alerts through Airflow's notifier API: a task that failed for good, a champion that changed.

Always on: :class:`RetrainerNotifier` (task log + a JSON file under ``<data_root>/_alerts/``).
Extra channels come from ``RETRAINER_ALERT_CHANNELS`` (comma-separated), read when the DAG is parsed:

* ``smtp``: ``SmtpNotifier`` (apache-airflow-providers-smtp) to ``RETRAINER_ALERT_EMAIL`` over the
  connection ``RETRAINER_SMTP_CONN_ID`` (default ``smtp_default``);
* ``slack``: ``SlackNotifier`` (apache-airflow-providers-slack, not installed by default) to
  ``RETRAINER_SLACK_CHANNEL`` over ``RETRAINER_SLACK_CONN_ID`` (default ``slack_api_default``).
"""

from __future__ import annotations

import re
from typing import Any

from airflow.sdk import BaseNotifier

from retrainer.core.deployment import deployment

SUBJECTS = {
    "task_failed": "[retrainer] {{ dag.dag_id }} {{ ti.task_id }} failed for {{ ds }} (run {{ run_id }})",
    "champion_changed": "[retrainer] {{ dag.dag_id }}: new champion from the run for {{ ds }} (run {{ run_id }})",
}
BODIES = {
    "task_failed": "{{ ti.task_id }} failed after try {{ ti.try_number }}: {{ exception }}\nLog: {{ ti.log_url }}",
    "champion_changed": "{{ ti.xcom_pull(task_ids=ti.task_id) }}",
}


def html_escaped(body: str) -> str:
    """``body`` with every ``{{ expression }}`` HTML-escaped when rendered: an exception or a decision quotes
    landed cell text, which anyone who can land a file chooses (a ``<script>`` or a link in an alert e-mail)."""
    return re.sub(r"\{\{\s*(.+?)\s*\}\}", r"{{ (\1) | e }}", body)


class RetrainerNotifier(BaseNotifier):
    """Logs the alert in the task's log and keeps it as JSON under the data root (``retrainer.runners.alerts``)."""

    template_fields = ()

    def __init__(self, event: str) -> None:
        super().__init__()
        if event not in SUBJECTS:
            raise ValueError(f"unknown alert event {event!r}; known: {sorted(SUBJECTS)}")
        self.event = event

    def notify(self, context: Any) -> None:
        from retrainer.core.config import default_data_root
        from retrainer.runners.airflow_adapter import alert_from_context
        from retrainer.runners.alerts import record

        record(alert_from_context(context, self.event), default_data_root())


class UnknownChannel(ValueError):
    """RETRAINER_ALERT_CHANNELS names a channel retrainer does not know."""


def _smtp(event: str) -> BaseNotifier:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    settings = deployment()
    to = settings.alert_email
    if not to:
        raise UnknownChannel("alert channel 'smtp' needs RETRAINER_ALERT_EMAIL (comma-separated addresses)")
    return SmtpNotifier(
        to=[a.strip() for a in to.split(",") if a.strip()],
        subject=SUBJECTS[event],
        html_content="<pre>" + html_escaped(BODIES[event]) + "</pre>",
        smtp_conn_id=settings.smtp_conn_id,
    )


def _slack(event: str) -> BaseNotifier:
    try:
        from airflow.providers.slack.notifications.slack import SlackNotifier
    except ImportError as exc:
        raise UnknownChannel("alert channel 'slack' needs apache-airflow-providers-slack installed") from exc
    settings = deployment()
    return SlackNotifier(
        slack_conn_id=settings.slack_conn_id,
        channel=settings.slack_channel,
        text=SUBJECTS[event] + "\n" + BODIES[event],
    )


CHANNELS = {"smtp": _smtp, "slack": _slack}


def notifiers(event: str) -> list[BaseNotifier]:
    """The callbacks for one event: the file notifier, then every configured channel."""
    out: list[BaseNotifier] = [RetrainerNotifier(event)]
    for name in filter(None, (c.strip() for c in deployment().alert_channels.split(","))):
        if name not in CHANNELS:
            raise UnknownChannel(f"RETRAINER_ALERT_CHANNELS names {name!r}; known: {sorted(CHANNELS)}")
        out.append(CHANNELS[name](event))
    return out
