"""The standard Airflow CLI, typed as a data engineer would, against the running scheduler (the standalone Airflow of
``test_running_airflow_api``, on PostgreSQL): no import errors to list, a backfill over three hours that runs each
of them once, and a failed task cleared with ``airflow tasks clear`` that runs again and heals its run.

In a file of its own that sorts after ``test_step_failures``: it adds hours to the DAG base after the outage run,
whose health check needs the raw data to be hours behind.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from candlecast.airflow_api import AirflowApi
from candlecast.airflow_local import LocalAirflow, clean
from candlecast.hours import HOUR
from tests.dags.conftest import BASE, BOOTING, HOURLY_START
from tests.dags.test_running_airflow_api import DAG_ID, airflow_cli

pytestmark = pytest.mark.integration

# The hours after the outage run's [16:00, 17:00) of test_step_failures: [17:00, 18:00), [18:00, 19:00), [19:00, 20:00).
FIRST = HOURLY_START + 5 * HOUR
HOURS = [FIRST + k * HOUR for k in range(3)]


def _json_output(stdout: str) -> Any:
    """The JSON document of ``-o json``: its last line (Airflow logs warnings to standard output before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def test_list_import_errors_finds_none_in_the_running_instance(api_airflow: LocalAirflow) -> None:
    assert _json_output(airflow_cli(api_airflow, "dags", "list-import-errors", "-o", "json")) == []


def _backfill_runs(api: AirflowApi) -> dict[datetime, dict[str, Any]]:
    runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill&limit=100")["dag_runs"]
    return {datetime.fromisoformat(r["logical_date"]): r for r in runs
            if datetime.fromisoformat(r["logical_date"]) in HOURS}


def _wait(what: str, ready, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (answer := ready()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(2)
    return answer


def _states(api: AirflowApi, run_id: str) -> dict[str, tuple[str, int]]:
    tis = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    return {t["task_id"]: (t["state"], t["try_number"]) for t in tis}


def test_a_three_hour_backfill_runs_each_hour_once_and_a_cleared_failed_extract_heals_its_run(
        hourly_run, api_airflow: LocalAirflow, replay_server, admin_engine, direct_run) -> None:
    from sqlalchemy import text

    from tools.replay import Fault

    api = AirflowApi(api_airflow)
    # Whatever ran before (or not) in this session: the scheduler runs no task of a paused DAG, and the direct
    # reference run, which fetches from the same replay server in the background, has no request left to send
    # (its last hour waits for test_running_airflow_api to release it), so the fault below hits the backfill.
    api.wait_for_dag(DAG_ID, timeout=180)
    airflow_cli(api_airflow, "dags", "unpause", DAG_ID)
    direct_run.wait("hourly")
    if direct_run.release_next_hour.is_set():
        direct_run.wait("next_hourly")
    # The first candles request of the backfill is refused (a 400 is not retried): the first hour's extract fails.
    replay_server.inject(Fault.error(status=400, times=1))
    airflow_cli(api_airflow, "backfill", "create", "--dag-id", DAG_ID, "--from-date", HOURS[0].isoformat(),
                "--to-date", HOURS[-1].isoformat(), "--max-active-runs", "1")
    runs = _wait("three backfill runs", lambda: (r := _backfill_runs(api)) and len(r) == 3 and r, 60)
    # one run per hour, each covering exactly its hour (a logical date is its interval's start)
    assert {(datetime.fromisoformat(r["data_interval_start"]), datetime.fromisoformat(r["data_interval_end"]))
            for r in runs.values()} == {(h, h + HOUR) for h in HOURS}

    first = runs[HOURS[0]]["dag_run_id"]
    _wait("the first hour's run to fail", lambda: _backfill_runs(api)[HOURS[0]]["state"] == "failed", 420)
    states = _states(api, first)
    assert states["extract"] == ("failed", 1), states
    assert states["all_steps_ok"][0] == "upstream_failed", states

    # What an operator does once the API answers again: clear the failed task (and what failed after it). Airflow
    # 3.3 matches --task-regex as a substring of the task id (^extract$ matches nothing); only extract has this one.
    airflow_cli(api_airflow, "tasks", "clear", DAG_ID, "--task-regex", "extract", "--downstream", "--only-failed",
                "--start-date", HOURS[0].isoformat(), "--end-date", HOURS[0].isoformat(), "--yes")
    _wait("the three runs to succeed",
          lambda: {r["state"] for r in _backfill_runs(api).values()} == {"success"}
          or any(r["state"] == "failed" for h, r in _backfill_runs(api).items() if h != HOURS[0]), 600)
    runs = _backfill_runs(api)
    assert {h: r["state"] for h, r in runs.items()} == dict.fromkeys(HOURS, "success")
    assert _states(api, first)["extract"] == ("success", 2)
    with admin_engine.connect() as conn:
        served = conn.execute(text(
            f"select target_hour from `{BASE}_ml`.forecast_outcomes where product_id = 'BTC-USD' and outcome = 'model' "
            "and target_hour > :first"), {"first": HOURS[0].replace(tzinfo=None)}).scalars().all()
    # the model's forecast for the hour after each interval (the failed run's fallback healed by the next run)
    assert sorted(served) == [(h + HOUR).replace(tzinfo=None) for h in HOURS]


def test_clean_removes_task_logs_older_than_the_cutoff_and_cleans_the_metadata_database(
        api_airflow: LocalAirflow) -> None:
    """``python -m candlecast.airflow_local clean`` (cron's housekeeping): ``airflow db clean`` runs against the
    instance's PostgreSQL, and the task log files older than the cutoff go, the newer ones stay. The cutoff here is
    before this session's runs, so the other tests' history is kept."""
    cutoff = datetime(2025, 1, 1, tzinfo=UTC)
    task_logs = [p for p in api_airflow.logs_dir.rglob("*") if p.is_file()]
    assert task_logs, "the tests' runs left no task log to keep"
    old = api_airflow.logs_dir / "dag_id=candlecast_hourly" / "run_id=scheduled__2024-12-01" / "task_id=extract"
    old.mkdir(parents=True)
    stale = old / "attempt=1.log"
    stale.write_text("an old run's log\n")
    os.utime(stale, (cutoff.timestamp() - 86400, cutoff.timestamp() - 86400))

    message = clean(cutoff, env=BOOTING["api"].env)

    assert "1 task log files removed" in message
    assert not stale.exists() and not old.parent.exists()  # and the folders it leaves empty
    assert all(p.exists() for p in task_logs)
    # the database kept this session's runs (all newer than the cutoff)
    runs = _json_output(airflow_cli(api_airflow, "dags", "list-runs", "candlecast_hourly", "-o", "json"))
    assert runs
