"""Alerts: every failed task of both DAGs says so, through Airflow's notifier mechanism (``BaseNotifier``).

Each task's ``on_failure_callback`` (set in the DAGs' ``default_args``) is a list of notifiers, run by the
task's worker once the task has failed for good (after its retries):

- ``LogAlertNotifier``, always: one ERROR line on the logger ``candlecast.alerts`` (in the task's log) naming the
  DAG, the task (a mapped one with its batch's map index, ``extract[1]``), the run, the hour (the data interval)
  and the error, e.g. the health step's ``HealthCheckFailed: ... BTC-USD: raw_lag_hours = 3 above the maximum 2 ...``.
- ``MailAlertNotifier``, when ``CANDLECAST_ALERT_EMAIL`` names addresses: the same text mailed through the
  SMTP provider's ``SmtpNotifier`` and the Airflow Connection ``CANDLECAST_ALERT_SMTP_CONN_ID`` (default
  ``smtp_default``), from ``CANDLECAST_ALERT_FROM`` (else the Connection's ``from_email``).

A task that fails the same way hour after hour (the production model losing to persistence until the weekly
retrain, an API down for a day) would otherwise mail 24 times a day. Mail is sent when a task's failure is new:
its first, one whose error differs (numbers aside: the hour, the lag, the skill change every hour), or the same
one ``CANDLECAST_ALERT_REPEAT_HOURS`` (24) hours of data time after the last mail. What was mailed is kept in an
Airflow Variable per task (``candlecast_alert.<dag>.<task>``), and the task's next success mails "resolved"
(``on_success_callback``: ``MailResolvedNotifier``) and forgets it. Reading or writing the Variable failing never
stops an alert: it is then mailed as if new.

The notifiers are built when a DAG file is parsed, from ``DagSettings`` (env vars only, no I/O); nothing of the
SMTP provider is imported unless mail is configured.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from candlecast.settings.dags import DagSettings

log = logging.getLogger("candlecast.alerts")


def _hour(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)


def _map_index(ti: Any) -> int | None:
    """The batch of a task mapped over product batches; None for a task that is not mapped (Airflow's -1)."""
    map_index = getattr(ti, "map_index", -1)
    return map_index if isinstance(map_index, int) and map_index >= 0 else None


def task_label(ti: Any) -> str:
    """The task id, with the batch's map index for a mapped task (``extract[1]``, as the Airflow UI shows it): the
    operator looks up that one task instance, and two batches failing the same hour are told apart."""
    task_id, map_index = getattr(ti, "task_id", "?"), _map_index(ti)
    return str(task_id) if map_index is None else f"{task_id}[{map_index}]"


def alert_subject(context: Mapping[str, Any]) -> str:
    ti = context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    start = context.get("data_interval_start")
    return f"candlecast alert: {dag_id}.{task_label(ti)} failed for {_hour(start)} UTC"


def _error_line(context: Mapping[str, Any]) -> str:
    error = context.get("exception")
    # a step run in its own process (cycle.step_process) reports the type raised there, not StepProcessError
    kind = getattr(error, "error_type", None) or type(error).__name__
    return f"{kind}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}" if error else \
        "no error recorded"


def alert_text(context: Mapping[str, Any]) -> str:
    """One line naming the DAG, task, run, hour and error, from a task's failure-callback context."""
    ti = context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", "?")
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    try_number = getattr(ti, "try_number", None)
    what = _error_line(context)
    tries = f", try {try_number}" if try_number else ""
    return (f"candlecast alert: DAG {dag_id} task {task_label(ti)} failed; run {run_id}; "
            f"hour {_hour(start)}..{_hour(end)} UTC{tries}: {what}")


class LogAlertNotifier(BaseNotifier):
    """The default alert: an ERROR line naming DAG, task, run, hour and error, in the task's log."""

    def notify(self, context: Any) -> None:
        log.error("%s", alert_text(context))


# --- what was mailed, so the same failure is not mailed every hour ----------------------------------------

@dataclass(frozen=True)
class Mailed:
    """The last alert mailed for a task: its error with the numbers masked, and the hour (data time) it failed."""

    signature: str
    hour: datetime

    def to_json(self) -> str:
        return json.dumps({"signature": self.signature, "hour": self.hour.isoformat()})

    @classmethod
    def from_json(cls, value: str) -> Mailed:
        data = json.loads(value)
        return cls(str(data["signature"]), datetime.fromisoformat(data["hour"]))


def signature(context: Mapping[str, Any]) -> str:
    """The error's first line with every number masked: the same failure an hour later has the same one."""
    return re.sub(r"\d+(\.\d+)?", "#", _error_line(context))


def is_new(previous: Mailed | None, current: Mailed, repeat: timedelta) -> bool:
    """Mail it: the task's first failure, a different one, or the same ``repeat`` or more of data time later
    (either way: a backfill of older hours counts too)."""
    return (previous is None or previous.signature != current.signature
            or abs(current.hour - previous.hour) >= repeat)


def memory_key(context: Mapping[str, Any]) -> str:
    ti = context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    map_index = _map_index(ti)
    suffix = "" if map_index is None else f".{map_index}"
    return f"candlecast_alert.{dag_id}.{getattr(ti, 'task_id', '?')}{suffix}"


def _recall(key: str) -> Mailed | None:
    from airflow.sdk import Variable

    value = Variable.get(key, default=None)
    return Mailed.from_json(value) if value else None


def mail_notifiers(settings: DagSettings) -> tuple[BaseNotifier, BaseNotifier]:
    """``SmtpNotifier``s to ``CANDLECAST_ALERT_EMAIL``: the alert (line and error in full) when a task's failure
    is new, and "resolved" at its next success."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    repeat = timedelta(hours=settings.alert_repeat_hours)

    class MailAlertNotifier(SmtpNotifier):
        def notify(self, context: Any) -> None:
            from airflow.sdk import Variable

            key, hour = memory_key(context), context.get("data_interval_start")
            current = Mailed(signature(context), hour) if isinstance(hour, datetime) else None
            try:
                previous = _recall(key)
            except Exception as exc:  # a memory that cannot be read must not swallow an alert
                log.warning("alert memory %s unreadable (%s: %s); mailing the alert", key, type(exc).__name__, exc)
                previous = None
            if current is not None and previous is not None and not is_new(previous, current, repeat):
                log.info("alert not mailed again: the same failure was mailed for the hour %s UTC (repeated every "
                         "%s h while it lasts; Variable %s)", _hour(previous.hour), settings.alert_repeat_hours, key)
                return
            error = context.get("exception")
            self.subject = alert_subject(context)
            self.html_content = (f"<p>{html.escape(alert_text(context))}</p>"
                                 + (f"<pre>{html.escape(str(error))}</pre>" if error else ""))
            super().notify(context)
            if current is not None:
                try:
                    Variable.set(key, current.to_json(), description="the last candlecast alert mailed for this task")
                except Exception as exc:  # the alert went out; at worst the next one repeats it
                    log.warning("alert memory %s not written (%s: %s)", key, type(exc).__name__, exc)

    class MailResolvedNotifier(SmtpNotifier):
        def notify(self, context: Any) -> None:
            from airflow.sdk import Variable

            key = memory_key(context)
            try:
                previous = _recall(key)
            except Exception as exc:  # no resolved mail is better than a failed task
                log.warning("alert memory %s unreadable (%s: %s)", key, type(exc).__name__, exc)
                return
            if previous is None:
                return
            ti = context.get("ti")
            dag_id = getattr(ti, "dag_id", "?")
            start = context.get("data_interval_start")
            self.subject = f"candlecast resolved: {dag_id}.{task_label(ti)} succeeded for {_hour(start)} UTC"
            self.html_content = (f"<p>{html.escape(self.subject)}; failing since the hour {_hour(previous.hour)} UTC "
                                 f"(last alert mailed then)</p>")
            super().notify(context)
            try:
                Variable.delete(key)
            except Exception as exc:  # the task succeeded; at worst its next success says "resolved" again
                log.warning("alert memory %s not deleted (%s: %s)", key, type(exc).__name__, exc)

    def notifier(kind: type[SmtpNotifier]) -> SmtpNotifier:
        return kind(to=list(settings.alert_email), from_email=settings.alert_from,
                    smtp_conn_id=settings.alert_smtp_conn_id, subject="candlecast alert", html_content="candlecast")

    return notifier(MailAlertNotifier), notifier(MailResolvedNotifier)


def default_args(settings: DagSettings, queue: str | None = None) -> dict[str, object]:
    """The DAGs' ``default_args``: retries and backoff from the settings; on failure the log line, and with mail
    configured the alert mail and, at the next success, the resolved one; the Celery ``queue`` of every task when
    one is given."""
    failure: list[BaseNotifier] = [LogAlertNotifier()]
    args: dict[str, object] = {**settings.default_args, "on_failure_callback": failure}
    if queue is not None:
        args["queue"] = queue
    if settings.alert_email:
        alert, resolved = mail_notifiers(settings)
        failure.append(alert)
        args["on_success_callback"] = [resolved]
    return args
