"""Alerts through Airflow's notifier API: a task that failed for good, a champion that changed, late data and a
stale champion (:mod:`retrainer.runners.freshness`).

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
    "data_late": "[retrainer] {{ dag.dag_id }}: raw data for {{ ds }} is late (run {{ run_id }})",
    "champion_stale": "[retrainer] {{ dag.dag_id }}: the champion is stale after the run for {{ ds }}",
}
BODIES = {
    "task_failed": "{{ ti.task_id }} failed after try {{ ti.try_number }}: {{ exception }}\nLog: {{ ti.log_url }}",
    "champion_changed": "{{ ti.xcom_pull(task_ids=ti.task_id) }}",
    "data_late": "{{ retrainer_alert }}",  # the message the task put in the context (retrainer.runners.freshness)
    "champion_stale": "{{ retrainer_alert }}",
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


def alert_once(context: Any, event: str, message: str) -> bool:
    """Send a freshness alert through every channel unless this task try already sent it (its file under the data
    root exists: a sensor in reschedule mode asks on every poke, a mail each time would be noise); returns
    whether it was sent."""
    from retrainer.core.config import default_data_root
    from retrainer.runners.airflow_adapter import alert_from_context
    from retrainer.runners.alerts import MESSAGE_KEY, alerts_folder

    context = {**context, MESSAGE_KEY: message}
    if (alerts_folder(default_data_root()) / alert_from_context(context, event).file_name).exists():
        return False
    for notifier in notifiers(event):
        notifier(context)
    return True


def champion_freshness(context: Any, model: str, run_date: Any, tracking_uri: str) -> str | None:
    """After a run's registration: the ``champion_stale`` alert (once per task try) when the champion is older
    than the deployment allows; returns its message. A registry that cannot be read here is logged, not raised:
    this is an alert, not a gate, and the registration it follows has already been decided and made."""
    import logging

    from retrainer import registry
    from retrainer.registry.promotion import holder
    from retrainer.runners.freshness import stale_champion

    try:
        champion = holder(tracking_uri, model, registry.CHAMPION)
    except registry.RegistryUnavailable as exc:
        logging.getLogger(__name__).error("champion freshness not checked: %s", exc)
        return None
    message = stale_champion(model, run_date, champion, deployment().champion_max_age_days)
    if message is not None:
        alert_once(context, "champion_stale", message)
    return message


def notifiers(event: str) -> list[BaseNotifier]:
    """The callbacks for one event: the file notifier, then every configured channel."""
    out: list[BaseNotifier] = [RetrainerNotifier(event)]
    for name in filter(None, (c.strip() for c in deployment().alert_channels.split(","))):
        if name not in CHANNELS:
            raise UnknownChannel(f"RETRAINER_ALERT_CHANNELS names {name!r}; known: {sorted(CHANNELS)}")
        out.append(CHANNELS[name](event))
    return out
