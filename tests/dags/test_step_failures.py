"""A run whose extract fails (an API outage on the replay server's clock) still forecasts, and still fails.

In a file of its own that sorts after the API test: it adds hours to the DAG base, which the tests before it
compare with the direct run table for table.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.dags.conftest import BASE, HOURLY_START

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


def test_an_api_outage_fails_the_run_at_extract_and_the_hour_still_gets_a_labelled_fallback(
        hourly_run, dagbag, replay_server, admin_engine, monkeypatch) -> None:
    from airflow.utils.session import create_session
    from sqlalchemy import text

    from tools.replay import Fault

    # The run for [15:00, 16:00) starts at 16:05, inside an outage of the API from 16:00 to 17:00.
    start = HOURLY_START + 3 * HOUR
    outage = Fault.outage(start + HOUR, start + 2 * HOUR)
    replay_server.set_clock(start + HOUR + timedelta(minutes=5))
    replay_server.inject(outage)
    monkeypatch.setenv("CANDLECAST_EXTRACT_MAX_ATTEMPTS", "1")  # the task's retries are off in the tests too
    try:
        dr = dagbag.dags["candlecast_hourly"].test(logical_date=start + HOUR)
    finally:
        replay_server.set_clock(None)
        replay_server.faults.clear()
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in dr.get_task_instances(session=session)}
    # The run is failed (what monitoring and the UI show) at its extract ...
    assert dr.state == "failed", states
    assert states["extract"] == "failed"
    assert states["all_steps_ok"] == "upstream_failed"
    # ... and everything after it ran on what the tables hold.
    assert {s for t, s in states.items() if t not in ("extract", "all_steps_ok")} == {"success"}, states
    with admin_engine.connect() as conn:
        outcome = conn.execute(text(
            f"select outcome, reason_code, reason from `{BASE}_ml`.forecast_outcomes "
            "where product_id = 'BTC-USD' and target_hour = :t"), {"t": (start + HOUR).replace(tzinfo=None)}).one()
        model_rows = conn.execute(text(f"select count(*) from `{BASE}_ml`.predictions where target_hour = :t"),
                                  {"t": (start + HOUR).replace(tzinfo=None)}).scalar()
    assert outcome.outcome == "fallback" and outcome.reason_code == "candle_missing"
    assert "extract step failed" in outcome.reason
    assert model_rows == 0
