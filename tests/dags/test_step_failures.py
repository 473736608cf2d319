"""A run whose extract fails (an API outage on the replay server's clock) still forecasts, and still fails; three
hours without new data by then, its health task fails too, and every failed task's alert reaches the mail server.
The next hour fails the same way and mails nothing new; the hour after, with the API back, mails "resolved".

In a file of its own that sorts after the API test: it adds hours to the DAG base, which the tests before it
compare with the direct run table for table.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.dags.conftest import ALERT_TO, BASE, HOURLY_START

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
# The run for [16:00, 17:00) starts at 17:05, inside an outage of the API from 17:00 to 18:00; the newest
# candle stored is 13:00's (12:00's when the API test did not run), so raw data is 3 h or more behind.
START = HOURLY_START + 4 * HOUR


def run_hour(dagbag, replay_server, start, outage: bool):
    """``dag.test`` of the hour ``[start, start + 1 h)`` at five past its end, the API down for that hour or not."""
    from airflow.utils.session import create_session

    from tools.replay import Fault

    replay_server.set_clock(start + HOUR + timedelta(minutes=5))
    if outage:
        replay_server.inject(Fault.outage(start + HOUR, start + 2 * HOUR))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CANDLECAST_EXTRACT_MAX_ATTEMPTS", "1")  # the task's retries are off in the tests too
        try:
            dr = dagbag.dags["candlecast_hourly"].test(logical_date=start + HOUR)
        finally:
            replay_server.set_clock(None)
            replay_server.faults.clear()
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in dr.get_task_instances(session=session)}
    return dr, states


@pytest.fixture(scope="module")
def outage_run(hourly_run, dagbag, replay_server, mail_sink):
    from airflow.models import Variable
    from airflow.utils.session import create_session

    # the metadata DB outlives a session: forget what an earlier one mailed, so this failure is new
    with create_session() as session:
        session.query(Variable).filter(Variable.key.like("candlecast_alert.%")).delete(synchronize_session=False)
    return run_hour(dagbag, replay_server, START, outage=True)


@pytest.fixture(scope="module")
def next_hours(outage_run, dagbag, replay_server, mail_sink):
    """The hour after the outage run's, the API still down; then the one after that, the API back."""
    mailed = len(mail_sink.messages)
    still_down = run_hour(dagbag, replay_server, START + HOUR, outage=True)
    mailed_while_down = mail_sink.messages[mailed:]
    back = run_hour(dagbag, replay_server, START + 2 * HOUR, outage=False)
    return still_down, mailed_while_down, back, mail_sink.messages[mailed + len(mailed_while_down):]


def test_an_api_outage_fails_the_run_at_extract_and_the_hour_still_gets_a_labelled_fallback(
        outage_run, admin_engine) -> None:
    from sqlalchemy import text

    dr, states = outage_run
    start = START
    # The run is failed (what monitoring and the UI show) at its extract ...
    assert dr.state == "failed", states
    assert states["extract"] == "failed"
    assert states["all_steps_ok"] == "upstream_failed"
    # ... and everything after it ran on what the tables hold (health judged it: the next test).
    assert {s for t, s in states.items() if t not in ("extract", "health", "all_steps_ok")} == {"success"}, states
    with admin_engine.connect() as conn:
        outcome = conn.execute(text(
            f"select outcome, reason_code, reason from `{BASE}_ml`.forecast_outcomes "
            "where product_id = 'BTC-USD' and target_hour = :t"), {"t": (start + HOUR).replace(tzinfo=None)}).one()
        model_rows = conn.execute(text(f"select count(*) from `{BASE}_ml`.predictions where target_hour = :t"),
                                  {"t": (start + HOUR).replace(tzinfo=None)}).scalar()
    assert outcome.outcome == "fallback" and outcome.reason_code == "candle_missing"
    assert "extract step failed" in outcome.reason
    assert model_rows == 0


def text_of(message) -> str:
    """A mail's text parts, decoded (the SMTP provider sends base64 UTF-8 HTML)."""
    return "".join(part.get_payload(decode=True).decode() for part in message.walk()
                   if part.get_content_maintype() == "text")


def test_stale_raw_data_fails_the_health_task_and_each_failed_task_alerts_by_mail(outage_run, mail_sink) -> None:
    dr, states = outage_run
    # red in the UI: the health task itself failed, on the freshness check (an error-severity dbt test)
    assert states["health"] == "failed", states
    # the on-failure notifiers ran for both failed tasks; the mail names DAG, task, run, hour and the error
    mails = {m["Subject"]: m for m in mail_sink.messages if dr.run_id in text_of(m)}
    hour = f"{START:%Y-%m-%d %H:%M}"  # the run's data interval [16:00, 17:00)
    # extract is mapped over the product batches (one here): its task names its batch, as the UI does
    assert set(mails) == {f"candlecast alert: candlecast_hourly.{task} failed for {hour} UTC"
                          for task in ("extract[0]", "health")}, [m["Subject"] for m in mail_sink.messages]
    health = mails[f"candlecast alert: candlecast_hourly.health failed for {hour} UTC"]
    assert health["To"] == ALERT_TO
    body = text_of(health)
    assert f"DAG candlecast_hourly task health failed; run {dr.run_id}; hour {hour}.." in body
    assert "HealthCheckFailed" in body and "BTC-USD: raw_lag_hours = " in body
    assert "above the maximum 2 (health_raw_data_is_fresh, error)" in body


def test_the_same_failure_an_hour_later_mails_nothing_and_the_first_success_mails_resolved(next_hours) -> None:
    (down, down_states), mailed_while_down, (back, back_states), mailed_when_back = next_hours
    # failed again, the same way: red in the UI, logged, but no second mail an hour after the first
    assert (down.state, down_states["extract"], down_states["health"]) == ("failed", "failed", "failed")
    assert [m["Subject"] for m in mailed_while_down] == []
    # the API back: the run catches up and succeeds, and both tasks that alerted say they are resolved
    assert back.state == "success", back_states
    hour = f"{START + 2 * HOUR:%Y-%m-%d %H:%M}"
    assert sorted(m["Subject"] for m in mailed_when_back) == [
        f"candlecast resolved: candlecast_hourly.{task} succeeded for {hour} UTC" for task in ("extract[0]", "health")]
    assert f"failing since the hour {START:%Y-%m-%d %H:%M} UTC" in text_of(mailed_when_back[0])
