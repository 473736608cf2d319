"""``python -m extract`` as a user runs it, the demo step, and who may write the raw tables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from candlecast.db import engine_for
from candlecast.hours import HOUR
from candlecast.settings import Schemas
from extract.windows import from_unix
from tests.extract.conftest import BASE, expected_rows, stored_rows
from tools.replay import Fault, ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE, "CANDLECAST_EXTRACT_RATE": "1000",
                "CANDLECAST_EXTRACT_BURST": "1000", "CANDLECAST_EXTRACT_BACKOFF_INITIAL": "0.05", **env}
    return subprocess.run([sys.executable, "-m", "extract", *args], env=full_env, capture_output=True, text=True,
                          timeout=120)


def test_help_names_both_modes_and_the_settings() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    assert "backfill" in out.stdout and "incremental" in out.stdout and "COINBASE_API_URL" in out.stdout


def test_backfill_then_incremental_from_the_command_line(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    out = run_cli("backfill", "--start", f"{start:%Y-%m-%d}", "--end", f"{start + 500 * HOUR:%Y-%m-%dT%H:%M}",
                  COINBASE_API_URL=replay.url)
    assert out.returncode == 0, out.stderr
    assert "BTC-USD backfill" in out.stdout and "500 inserted" in out.stdout
    assert "BTC-USD:" in out.stderr and "/500 [" in out.stderr and "h/s]" in out.stderr  # the bar, in hours

    out = run_cli("incremental", "--end", f"{start + 520 * HOUR:%Y-%m-%dT%H:%M:%S+00:00}", "--api-url", replay.url)
    assert out.returncode == 0, out.stderr
    assert "BTC-USD incremental" in out.stdout and "20 inserted" in out.stdout
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, start + 520 * HOUR)


def test_a_failure_is_one_line_on_stderr_and_a_nonzero_exit(
    replay: ReplayServer, raw: Schemas, series: CandleSeries
) -> None:
    replay.inject(Fault.wrong_shape())
    start = from_unix(series.times[0])
    out = run_cli("backfill", "--start", f"{start:%Y-%m-%d}", "--end", f"{start + 24 * HOUR:%Y-%m-%d}",
                  "--no-progress", COINBASE_API_URL=replay.url)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: BTC-USD window [2021-12-14 00:00, 2021-12-15 00:00) UTC")
    assert "expected a JSON array of candles" in lines[0]


def test_usage_errors_exit_2() -> None:
    assert run_cli("backfill", "--start", "yesterday", "--end", "2024-01-01").returncode == 2
    assert run_cli("sideways").returncode == 2


def test_the_demo_step_backfills_the_bundled_sample_over_http(raw: Schemas, loader_engine, series) -> None:
    from demo.extract_step import backfill_bundled_sample

    env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE}
    summary = backfill_bundled_sample(env)
    assert "18,164 BTC-USD hourly candles stored, 2021-12-14 00:00 to 2024-01-09 23:00 UTC" in summary
    assert "missing hours (left out by the API, reported, not invented): 4 (2023-03-04 17:00..20:00 UTC)" in summary
    assert f"table {BASE}_raw.candles" in summary
    assert stored_rows(loader_engine, raw) == expected_rows(series)


def test_only_the_loader_writes_raw_and_the_reader_cannot_even_read_it(raw: Schemas) -> None:
    for role in ("reader", "ml"):
        engine = engine_for(role)
        with engine.connect() as conn, pytest.raises((OperationalError, ProgrammingError)):
            conn.exec_driver_sql(
                f"insert into `{raw.raw}`.candles values ('X', '2024-01-01', 1, 1, 1, 1, 1, utc_timestamp(6))")
        engine.dispose()
    reader = engine_for("reader")
    with reader.connect() as conn, pytest.raises((OperationalError, ProgrammingError)):
        conn.exec_driver_sql(f"select * from `{raw.raw}`.candles limit 1")
    reader.dispose()
    loader = engine_for("loader")
    with loader.connect() as conn, pytest.raises((OperationalError, ProgrammingError)):
        conn.exec_driver_sql(f"create table `{raw.marts}`.loader_was_here (x int)")
    loader.dispose()
