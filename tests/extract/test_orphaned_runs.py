"""A run whose owner died never stays `running`: the next run marks it abandoned, and leaves live ones alone.

Each run holds a MariaDB named lock on a connection of its own; the lock goes with the connection. (The
database being SIGKILLed mid-run is in ``test_database_killed.py``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy.pool import NullPool

from candlecast.db import make_engine
from candlecast.hours import HOUR
from candlecast.settings import Schemas, db_settings
from extract import load, pipeline
from extract.windows import Window, from_unix
from tests.extract.conftest import BASE, PRODUCT, expected_rows, fast_settings, stored_rows
from tests.extract.test_pipeline import run_log
from tools.replay import Fault, ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration

REASON = "owner gone: lock released (process or server died) before the run recorded its outcome; found by run "


def wait_until_free(engine, run_id: str) -> None:
    """The server ends a closed client's session (and its locks) a moment after the socket closes."""
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while conn.exec_driver_sql("select is_used_lock(%s)", (load.run_lock_name(run_id),)).scalar() is not None:
            assert time.monotonic() < deadline, f"run {run_id}'s lock should go with its connection"
            time.sleep(0.02)


def test_a_running_row_whose_owner_is_gone_is_abandoned_and_one_whose_owner_is_alive_is_left_alone(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    dead, alive = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id in (dead, alive):  # rows as runs write them when they start
        load.start_run(loader_engine, raw, run_id, PRODUCT, "incremental", Window(start, start + HOUR))
    owner = make_engine(db_settings("loader"), poolclass=NullPool)  # closing a connection really closes it
    with owner.connect() as conn:  # the live run's own connection, holding its lock
        assert conn.exec_driver_sql("select get_lock(%s, 0)", (load.run_lock_name(alive),)).scalar() == 1

        result = pipeline.backfill(PRODUCT, start, start + 5 * HOUR, engine=loader_engine, schemas=raw,
                                   settings=fast_settings(replay.url))

        rows = {r["run_id"]: r for r in run_log(loader_engine, raw)}
        assert (rows[dead]["status"], rows[dead]["error"]) == ("abandoned", REASON + result.run_id)
        assert (rows[alive]["status"], rows[alive]["error"]) == ("running", None)
        assert rows[result.run_id]["status"] == "success"
    # the live owner is gone now too (its connection closed): the next run notices
    owner.dispose()
    wait_until_free(loader_engine, alive)
    pipeline.backfill(PRODUCT, start, start + 5 * HOUR, engine=loader_engine, schemas=raw,
                      settings=fast_settings(replay.url))
    assert {r["run_id"]: r["status"] for r in run_log(loader_engine, raw)}[alive] == "abandoned"


def test_an_extract_process_killed_mid_run_leaves_a_row_the_next_run_marks_abandoned(
    raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    end = start + 1200 * HOUR
    with ReplayServer({series.product_id: series}, rate=None) as server:
        server.inject(Fault.hang(60, skip=2))  # no answer to the third window: the process waits on it
        env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE, "CANDLECAST_EXTRACT_RATE": "1000",
               "CANDLECAST_EXTRACT_BURST": "1000", "CANDLECAST_EXTRACT_TIMEOUT": "60"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "extract", "backfill", "--start", f"{start:%Y-%m-%dT%H:%M}",
             "--end", f"{end:%Y-%m-%dT%H:%M}", "--no-progress", "--api-url", server.url],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while [r.fault for r in server.requests] != [None, None, "hang"]:
                assert proc.poll() is None and time.monotonic() < deadline, "the run should be waiting on window 3"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)  # as an Airflow worker's or the OOM killer's SIGKILL would
        finally:
            proc.wait(timeout=30)
        [killed] = run_log(loader_engine, raw)
        assert (killed["status"], killed["inserted"]) == ("running", 600)
        wait_until_free(loader_engine, killed["run_id"])

        server.faults.clear()
        result = pipeline.backfill(PRODUCT, start, end, engine=loader_engine, schemas=raw,
                                   settings=fast_settings(server.url))
    rows = {r["run_id"]: r for r in run_log(loader_engine, raw)}
    assert (rows[killed["run_id"]]["status"], rows[killed["run_id"]]["error"]) == ("abandoned", REASON + result.run_id)
    assert (result.inserted, result.unchanged) == (600, 600)
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, end)
