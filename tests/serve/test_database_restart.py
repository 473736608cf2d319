"""The database goes away under a running API and comes back: 503s with a clear body meanwhile, then answers
again with no restart of the API.

This stops and starts a PRIVATE MariaDB (its own folder and a free port), never the shared test server, whose
other tests would fail meanwhile. Its marts are copies of the tables the pipeline built for ``ct_serve``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from candlecast import mariadb as local
from candlecast.db import make_engine
from candlecast.settings import ApiSettings, db_settings
from serve.server import ThreadedServer
from tests.serve.conftest import NEWEST, NOW, ServedData
from tests.support import free_port

pytestmark = pytest.mark.integration

TABLES = ("fct_candle_features", "fct_forecast_outcomes", "model_leaderboard", "product_health")


def copy_marts(source: ServedData, env: dict[str, str]) -> None:
    """The marts' tables, structure and rows (the features of the last fortnight), into the private server."""
    target = make_engine(db_settings("admin", env))
    try:
        with source.admin.connect() as src, target.begin() as dst:
            marts = source.schemas.marts
            for table in TABLES:
                ddl = src.execute(text(f"show create table `{marts}`.`{table}`")).one()[1]
                dst.execute(text(f"drop table if exists `{marts}`.`{table}`"))
                dst.execute(text(f"use `{marts}`"))
                dst.execute(text(ddl))
                where = "where hour >= :since" if table == "fct_candle_features" else ""
                rows = [dict(r) for r in src.execute(text(f"select * from `{marts}`.`{table}` {where}"),
                                                     {"since": NEWEST.replace(day=1)}).mappings()]
                columns = list(rows[0])
                dst.execute(text(f"insert into `{marts}`.`{table}` ({', '.join(f'`{c}`' for c in columns)}) "
                                 f"values ({', '.join(':' + c for c in columns)})"), rows)
    finally:
        target.dispose()


@pytest.fixture
def private_db(served_data: ServedData, server_dir: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "CANDLECAST_LOCAL_DIR": str(server_dir), "CANDLECAST_DB_PORT": str(free_port()),
           "CANDLECAST_DB_SCHEMA": served_data.schemas.base}
    env.pop("CANDLECAST_CREDENTIALS_FILE", None)
    for key in [k for k in env if k.endswith(("_PASSWORD", "_USER"))]:
        del env[key]  # the private server generates its own
    local.start(env=env)
    try:
        local.provision(served_data.schemas, env=env)
        copy_marts(served_data, env)
        yield env
    finally:
        local.stop(env=env)


def test_the_api_answers_503_while_the_database_is_down_and_recovers_without_a_restart(
        served_data: ServedData, private_db: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    from serve.app import create_app

    reader = db_settings("reader", private_db)
    app = create_app(ApiSettings(db_timeout_s=2, cache_seconds=1), reader, clock=lambda: NOW)
    caplog.set_level(logging.INFO)
    with ThreadedServer(app, free_port()) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        before = client.get("/v1/forecasts/latest")
        assert before.status_code == 200
        assert client.get("/v1/health").status_code == 200

        assert local.stop(env=private_db)
        # a URL not in the API's short answer cache, and health (never cached), fail at once
        for path in ("/v1/health", "/v1/products/BTC-USD/forecasts"):
            down = client.get(path)
            assert down.status_code == 503, (path, down.text)
            error = down.json()["error"]
            assert error["code"] == "database_unavailable"
            assert f"reader@127.0.0.1:{reader.port}" in error["message"] and reader.password not in down.text
            assert down.headers["retry-after"] == "5"
        time.sleep(1.2)  # CANDLECAST_API_CACHE_SECONDS: then a cached URL is asked of the database again
        assert client.get("/v1/forecasts/latest").status_code == 503
        page = client.get("/")
        assert page.status_code == 503 and "database is unavailable" in page.text
        assert client.get("/v1/ping").status_code == 200  # the process itself is alive

        # the outage is logged, naming where and why, without the password
        logged = [r.getMessage() for r in caplog.records if r.name == "serve"]
        assert any(f"reader@127.0.0.1:{reader.port}" in line for line in logged)
        assert not [line for line in logged if reader.password in line]

        local.start(env=private_db)
        # the very first request after the restart is served: the pool pings and replaces its dead connections
        after = client.get("/v1/forecasts/latest")
        assert after.status_code == 200, after.text
        assert after.json() == before.json()
        assert client.get("/v1/health").status_code == 200
