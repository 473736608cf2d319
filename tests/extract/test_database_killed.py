"""The database is SIGKILLed in the middle of a backfill; a re-run then completes with exact data.

This uses a PRIVATE MariaDB (``.local/test-kill``, port 3409), never the shared test server on 3408.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlecast import mariadb as local
from candlecast.db import make_engine
from candlecast.settings import Schemas, db_settings
from extract import pipeline
from extract.pipeline import RunFailed
from extract.replay import Fault, ReplayServer
from extract.replay.data import CandleSeries
from extract.schema import ensure_raw_tables
from extract.windows import HOUR
from tests.extract.conftest import PRODUCT, expected_rows, fast_settings, sample_bounds, stored_rows

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
KILL_ENV = {
    "CANDLECAST_LOCAL_DIR": str(REPO_ROOT / ".local" / "test-kill"),
    "CANDLECAST_DB_PORT": os.environ.get("CANDLECAST_TEST_KILL_DB_PORT", "3409"),
}
SCHEMAS = Schemas("ct_kill")


def kill_database() -> None:
    server = local.local_server(KILL_ENV)
    pid = local.running_pid(server)
    assert pid is not None, "the private database should be running"
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)  # our child when this session started it: reap it, or it lingers as a zombie
    except ChildProcessError:
        deadline = time.monotonic() + 30
        while local.running_pid(server) is not None and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(scope="module")
def private_db() -> Iterator[dict[str, str]]:
    local.start(env=KILL_ENV)
    local.provision(SCHEMAS, env=KILL_ENV)
    admin = make_engine(db_settings("admin", KILL_ENV))
    ensure_raw_tables(admin, SCHEMAS)
    with admin.begin() as conn:
        for table in ("candles", "candle_rejects", "extract_runs"):
            conn.exec_driver_sql(f"delete from `{SCHEMAS.raw}`.{table}")
    admin.dispose()
    yield KILL_ENV
    local.stop(env=KILL_ENV)


def test_a_backfill_survives_the_database_being_killed_mid_run(
    private_db: dict[str, str], series: CandleSeries
) -> None:
    start, end = sample_bounds(series)
    with ReplayServer({series.product_id: series}, rate=None) as server:
        settings = fast_settings(server.url)
        # The 21st request kills the database before its answer arrives: 20 windows are committed by then,
        # and the 21st window's write meets a dead server.
        server.inject(Fault.call(kill_database, skip=20))
        engine = make_engine(db_settings("loader", private_db))
        with pytest.raises(RunFailed) as caught:
            pipeline.backfill(PRODUCT, start, end, engine=engine, schemas=SCHEMAS, settings=settings)
        engine.dispose()
        window = f"[{start + 6000 * HOUR:%Y-%m-%d %H:%M}, {start + 6300 * HOUR:%Y-%m-%d %H:%M}) UTC"
        assert str(caught.value).startswith(f"BTC-USD window {window}: database write failed, window rolled back")

        local.start(env=private_db)  # InnoDB crash recovery
        engine = make_engine(db_settings("loader", private_db))
        # exactly the committed windows survived, each complete
        assert stored_rows(engine, SCHEMAS) == expected_rows(series, start, start + 6000 * HOUR)

        result = pipeline.backfill(PRODUCT, start, end, engine=engine, schemas=SCHEMAS, settings=settings)
    assert (result.status, result.inserted, result.unchanged, result.updated) == ("success", 12_164, 6000, 0)
    assert stored_rows(engine, SCHEMAS) == expected_rows(series)
    with engine.connect() as conn:
        statuses = conn.exec_driver_sql(
            f"select status, inserted from `{SCHEMAS.raw}`.extract_runs order by started_at").all()
    engine.dispose()
    # the killed run could not record its own failure; its counters match what it had committed
    assert [tuple(s) for s in statuses] == [("running", 6000), ("success", 12_164)]
