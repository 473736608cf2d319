"""Extract tests: their own databases (base ``ct_extract``) and replay servers on ephemeral ports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import pytest

from candlecast.hours import HOUR, naive_utc
from candlecast.settings import ExtractSettings, Schemas
from extract.windows import from_unix
from tools.replay import ReplayServer, bundled_series
from tools.replay.data import CandleSeries

BASE = "ct_extract"
PRODUCT = "BTC-USD"


def fast_settings(url: str, **changes: object) -> ExtractSettings:
    """Settings for tests that are not about the rate limit: no pacing, short backoff and timeout."""
    base = ExtractSettings(
        api_url=url, rate_per_second=1000.0, burst=1000, max_attempts=3, timeout_s=2.0,
        backoff_initial_s=0.05, backoff_max_s=0.5,
    )
    return base.with_(**changes)


def sample_bounds(series: CandleSeries) -> tuple[datetime, datetime]:
    """[first hour, last hour + 1h) of a series."""
    return from_unix(series.times[0]), from_unix(series.times[-1]) + HOUR


def expected_rows(series: CandleSeries, start: datetime | None = None, end: datetime | None = None) -> dict:
    """{naive UTC hour: (open, high, low, close, volume)} from the CSV, as the raw table should hold them."""
    rows = {}
    for t, (low, high, open_, close, volume) in zip(series.times, series.rows, strict=True):
        hour = from_unix(t)
        if (start is None or hour >= start) and (end is None or hour < end):
            rows[naive_utc(hour)] = tuple(Decimal(v) for v in (open_, high, low, close, volume))
    return rows


def stored_rows(engine, schemas: Schemas, product_id: str = PRODUCT) -> dict:
    with engine.connect() as conn:
        result = conn.exec_driver_sql(
            f"select bucket_start, open, high, low, close, volume from `{schemas.raw}`.candles "
            "where product_id = %s order by bucket_start",
            (product_id,),
        )
        return {row[0]: tuple(row[1:]) for row in result}


@pytest.fixture(scope="session")
def series() -> CandleSeries:
    return bundled_series()


@pytest.fixture(scope="session")
def extract_schemas(provision_schemas, admin_engine) -> Schemas:
    from extract.schema import ensure_raw_tables

    schemas = provision_schemas(BASE)
    ensure_raw_tables(admin_engine, schemas)
    return schemas


@pytest.fixture(scope="session")
def loader_engine(extract_schemas: Schemas):
    from candlecast.db import engine_for

    engine = engine_for("loader")
    yield engine
    engine.dispose()


@pytest.fixture
def raw(extract_schemas: Schemas, admin_engine) -> Schemas:
    """Empty raw tables for one test."""
    with admin_engine.begin() as conn:
        for table in ("candles", "candle_rejects", "extract_runs"):
            conn.exec_driver_sql(f"delete from `{extract_schemas.raw}`.{table}")
    return extract_schemas


@pytest.fixture
def replay(series: CandleSeries) -> Iterator[ReplayServer]:
    """The bundled sample over HTTP, without the server's own rate limit (tests of the limit make their own)."""
    with ReplayServer({series.product_id: series}, rate=None) as server:
        yield server
