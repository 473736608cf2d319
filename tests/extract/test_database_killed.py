"""The database is SIGKILLed in the middle of a backfill; it starts again at once, and a re-run completes
with exact data and marks the killed run abandoned.

This uses a PRIVATE MariaDB (``.local/test-kill``, on a free port), never the shared test server.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candlecast import mariadb as local
from candlecast.db import make_engine
from candlecast.hours import HOUR
from candlecast.settings import Schemas, db_settings
from extract import pipeline
from extract.pipeline import RunFailed
from extract.schema import ensure_raw_tables
from tests.extract.conftest import PRODUCT, expected_rows, fast_settings, sample_bounds, stored_rows
from tests.support import free_port
from tools.replay import Fault, ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
KILL_ENV = {
    "CANDLECAST_LOCAL_DIR": str(REPO_ROOT / ".local" / "test-kill"),
    "CANDLECAST_DB_PORT": str(free_port()),  # other checkouts run this test side by side
}
SCHEMAS = Schemas("ct_kill")


def kill_database() -> None:
    """SIGKILL, and nothing else: the test starts the server again at once, with the killed one still dying
    (or a zombie: this session started it and does not reap it)."""
    pid = local.running_pid(local.local_server(KILL_ENV))
    assert pid is not None, "the private database should be running"
    os.kill(pid, signal.SIGKILL)


def clear_tables(env: dict[str, str]) -> None:
    admin = make_engine(db_settings("admin", env))
    ensure_raw_tables(admin, SCHEMAS)
    with admin.begin() as conn:
        for table in ("candles", "candle_rejects", "extract_runs"):
            conn.exec_driver_sql(f"delete from `{SCHEMAS.raw}`.{table}")
    admin.dispose()


@pytest.fixture(scope="module")
def private_db() -> Iterator[dict[str, str]]:
    local.start(env=KILL_ENV)
    local.provision(SCHEMAS, env=KILL_ENV)
    yield KILL_ENV
    local.stop(env=KILL_ENV)


class KillMidTransaction:
    """SIGKILL the server while a window's transaction has written its candles but not committed.

    Deterministic, not a race: when armed, another session locks the run log row, so the window's transaction
    (candles upserted, then its run-log counters updated) blocks on that update with its 300 rows written and
    uncommitted. A watcher sees it waiting (the process list is live) and kills the server right then.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.caught = False
        self.thread: threading.Thread | None = None
        self._blocker: Any = None  # a pymysql connection holding the row lock (pymysql is untyped)

    def _connect(self):
        import pymysql

        admin = db_settings("admin", self.env)
        return pymysql.connect(host=admin.host, port=admin.port, user=admin.user, password=admin.password)

    def arm(self) -> None:
        self._blocker = self._connect()
        with self._blocker.cursor() as cur:
            cur.execute(f"select run_id from `{SCHEMAS.raw}`.extract_runs for update")
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        loader = db_settings("loader", self.env).user
        deadline = time.monotonic() + 20
        try:
            conn = self._connect()
            with conn.cursor() as cur:
                while time.monotonic() < deadline and not self.caught:
                    cur.execute(
                        "select count(*) from information_schema.processlist where user = %s and info like %s",
                        (loader, "update%extract_runs%"),
                    )
                    self.caught = cur.fetchone()[0] > 0
                    time.sleep(0.005)
        finally:
            kill_database()


@pytest.mark.parametrize("when", ["between-windows", "inside-a-transaction"])
def test_a_backfill_survives_the_database_being_killed_mid_run(
    private_db: dict[str, str], series: CandleSeries, when: str
) -> None:
    local.start(env=private_db)  # up again after the previous case killed it
    clear_tables(private_db)
    start, end = sample_bounds(series)
    watcher = KillMidTransaction(private_db)
    # The 21st request sets the kill off: 20 windows are committed by then, and the 21st is being fetched
    # (killed at once) or will be half-way through its transaction (killed there).
    kill = kill_database if when == "between-windows" else watcher.arm

    with ReplayServer({series.product_id: series}, rate=None) as server:
        settings = fast_settings(server.url)
        server.inject(Fault.call(kill, skip=20))
        engine = make_engine(db_settings("loader", private_db))
        with pytest.raises(RunFailed) as caught:
            pipeline.backfill(PRODUCT, start, end, engine=engine, schemas=SCHEMAS, settings=settings)
        engine.dispose()
        if watcher.thread is not None:
            watcher.thread.join()
            assert watcher.caught, "the kill should have landed inside the 21st window's transaction"
        committed = caught.value.result.windows
        assert committed == 20
        first, stop = start + committed * 300 * HOUR, start + (committed + 1) * 300 * HOUR
        window = f"[{first:%Y-%m-%d %H:%M}, {stop:%Y-%m-%d %H:%M})"
        assert str(caught.value).startswith(f"BTC-USD window {window} UTC: database write failed, window rolled back")

        local.start(env=private_db)  # at once after the kill: waits for the dying server, then crash recovery
        engine = make_engine(db_settings("loader", private_db))
        # exactly the committed windows survived, each complete; nothing of the one being written
        stored = stored_rows(engine, SCHEMAS)
        assert stored == expected_rows(series, start, start + 20 * 300 * HOUR)

        result = pipeline.backfill(PRODUCT, start, end, engine=engine, schemas=SCHEMAS, settings=settings)
    assert (result.status, result.inserted + result.unchanged, result.updated) == ("success", 18_164, 0)
    assert result.unchanged == len(stored)
    assert stored_rows(engine, SCHEMAS) == expected_rows(series)
    with engine.connect() as conn:
        statuses = conn.exec_driver_sql(
            f"select status, inserted, error from `{SCHEMAS.raw}`.extract_runs order by started_at").all()
    engine.dispose()
    # the killed run could not record its own failure; its counters match what it had committed, and the
    # re-run, finding its lock gone with the server, marked it abandoned
    killed, rerun = (tuple(row) for row in statuses)
    assert killed == ("abandoned", len(stored), "owner gone: lock released (process or server died) before the "
                      f"run recorded its outcome; found by run {result.run_id}")
    assert rerun == ("success", 18_164 - len(stored), None)
