"""Alerts: every failed task of both DAGs says so, through Airflow's notifier mechanism (``BaseNotifier``).

Each task's ``on_failure_callback`` (set in the DAGs' ``default_args``) is a list of notifiers, run by the
task's worker once the task has failed for good (after its retries):

- ``LogAlertNotifier``, always: one ERROR line on the logger ``candlecast.alerts`` (in the task's log) naming the
  DAG, the task, the run, the hour (the data interval) and the error, e.g. the health step's
  ``HealthCheckFailed: ... BTC-USD: raw_lag_hours = 3 above the maximum 2 ...``.
- ``MailAlertNotifier``, when ``CANDLECAST_ALERT_EMAIL`` names addresses: the same text mailed through the
  SMTP provider's ``SmtpNotifier`` and the Airflow Connection ``CANDLECAST_ALERT_SMTP_CONN_ID`` (default
  ``smtp_default``), from ``CANDLECAST_ALERT_FROM`` (else the Connection's ``from_email``).

The notifiers are built when a DAG file is parsed, from ``DagSettings`` (env vars only, no I/O); nothing of the
SMTP provider is imported unless mail is configured.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from candlecast.settings.dags import DagSettings

log = logging.getLogger("candlecast.alerts")


def _hour(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)


def alert_subject(context: Mapping[str, Any]) -> str:
    ti = context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    start = context.get("data_interval_start")
    return f"candlecast alert: {dag_id}.{task_id} failed for {_hour(start)} UTC"


def alert_text(context: Mapping[str, Any]) -> str:
    """One line naming the DAG, task, run, hour and error, from a task's failure-callback context."""
    ti = context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", "?")
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    try_number = getattr(ti, "try_number", None)
    error = context.get("exception")
    # a step run in its own process (cycle.step_process) reports the type raised there, not StepProcessError
    kind = getattr(error, "error_type", None) or type(error).__name__
    what = f"{kind}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}" if error else \
        "no error recorded"
    tries = f", try {try_number}" if try_number else ""
    return (f"candlecast alert: DAG {dag_id} task {task_id} failed; run {run_id}; hour {_hour(start)}..{_hour(end)} "
            f"UTC{tries}: {what}")


class LogAlertNotifier(BaseNotifier):
    """The default alert: an ERROR line naming DAG, task, run, hour and error, in the task's log."""

    def notify(self, context: Any) -> None:
        log.error("%s", alert_text(context))


def mail_notifier(settings: DagSettings) -> BaseNotifier:
    """A ``SmtpNotifier`` sending the alert line (and the error in full) to ``CANDLECAST_ALERT_EMAIL``."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    class MailAlertNotifier(SmtpNotifier):
        def notify(self, context: Any) -> None:
            error = context.get("exception")
            self.subject = alert_subject(context)
            self.html_content = (f"<p>{html.escape(alert_text(context))}</p>"
                                 + (f"<pre>{html.escape(str(error))}</pre>" if error else ""))
            super().notify(context)

    return MailAlertNotifier(to=list(settings.alert_email), from_email=settings.alert_from,
                             smtp_conn_id=settings.alert_smtp_conn_id, subject="candlecast alert",
                             html_content="candlecast alert")


def failure_notifiers(settings: DagSettings) -> list[BaseNotifier]:
    """The ``on_failure_callback`` of every task: the log line, and mail when addresses are configured."""
    notifiers: list[BaseNotifier] = [LogAlertNotifier()]
    if settings.alert_email:
        notifiers.append(mail_notifier(settings))
    return notifiers


def default_args(settings: DagSettings) -> dict[str, object]:
    """The DAGs' ``default_args``: retries and backoff from the settings, the failure alerts from here."""
    return {**settings.default_args, "on_failure_callback": failure_notifiers(settings)}
