"""Serving test set-up: base ``ct_serve`` built once per session by the real pipeline, and the API on a real
uvicorn server as the ``reader`` role.

The data is the bundled candles with one hour of the last week left out (as the API leaves hours out): dbt
builds the feature mart, LightGBM and the baselines are trained and the best promoted, the hourly step serves
every hour of the last week (a labelled fallback for the missing one), and dbt builds the accuracy and health
marts. So
the API reads exactly what a deployment's marts hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from candlecast import dbt_runner
from candlecast.hours import HOUR
from candlecast.settings import ApiSettings, DbSettings, Schemas, db_settings
from serve.server import ThreadedServer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = "ct_serve"
DBT_DIR = REPO_ROOT / ".local" / "test" / "dbt-serve"
PRODUCT = "BTC-USD"
NEWEST = datetime(2024, 1, 9, 23)  # the bundled sample's newest hour
MISSING = NEWEST - 30 * HOUR  # left out of the raw table: the API never published it
WEEK_START = NEWEST + HOUR - timedelta(days=7)  # first feature hour the hourly step served
# The tests' "now": five minutes into the hour after the newest candle, as when the cycle has just run.
NOW = datetime(2024, 1, 10, 0, 5, tzinfo=UTC)


def run_dbt(command: str, *select: str) -> None:
    dbt_runner.run_dbt([command], env={**os.environ, "CANDLECAST_DB_SCHEMA": BASE}, select=select,
                       target_path=DBT_DIR / "target", log_path=DBT_DIR / "logs", timeout=600)


@dataclass(frozen=True)
class ServedData:
    schemas: Schemas
    admin: Engine
    reader: DbSettings


@pytest.fixture(scope="session")
def served_data(mariadb: dict[str, str], provision_schemas, admin_engine, tmp_path_factory) -> ServedData:
    from sqlalchemy import text

    from candlecast.db import engine_for
    from ml.evaluate import evaluate
    from ml.lineage import read_lineage
    from ml.predict import forecast_hours
    from ml.promote import promote
    from ml.store import ModelStore
    from ml.train import train
    from tests.ml.conftest import fast_load_raw, small_config

    schemas = provision_schemas(BASE, fresh=True)
    loader = engine_for("loader")
    fast_load_raw(loader, schemas)
    with loader.begin() as conn:
        conn.execute(text(f"delete from `{schemas.raw}`.candles where bucket_start = :h"), {"h": MISSING})
    loader.dispose()
    run_dbt("run", "+fct_candle_features")
    ml = engine_for("ml")
    store = ModelStore(tmp_path_factory.mktemp("serve-models"))
    lineage = read_lineage(DBT_DIR / "target" / "manifest.json")  # of the dbt run that built the features
    train(ml, schemas, store, PRODUCT, NEWEST - 168 * HOUR, small_config(), lineage=lineage)
    promote(ml, schemas, evaluate(ml, schemas, store, PRODUCT, NEWEST, lineage=lineage))
    outcomes = forecast_hours(ml, schemas, store, PRODUCT, WEEK_START, NEWEST + HOUR, lineage=lineage)
    assert [o.outcome for o in outcomes].count("fallback") == 1
    ml.dispose()
    run_dbt("run", "tag:accuracy", "tag:health")  # health as of the newest raw hour + 1 h: the cycle's
    reader = db_settings("reader", {**os.environ, "CANDLECAST_DB_SCHEMA": BASE})
    return ServedData(schemas, admin_engine, reader)


@pytest.fixture(scope="session")
def api(served_data: ServedData) -> Iterator[ThreadedServer]:
    from serve.app import create_app
    from tests.support import free_port

    settings = ApiSettings(max_range_days=31, default_page_size=48, max_page_size=200)
    app = create_app(settings, served_data.reader, clock=lambda: NOW)
    with ThreadedServer(app, free_port()) as server:  # never a fixed port: other checkouts run suites side by side
        yield server
