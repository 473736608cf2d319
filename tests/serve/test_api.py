"""The read API over real HTTP against the marts the pipeline built (``tests/serve/conftest.py``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from candlecast.hours import HOUR
from candlecast.settings import ApiSettings
from serve.server import ThreadedServer
from tests.serve.conftest import MISSING, NEWEST, NOW, PRODUCT, WEEK_START, ServedData

pytestmark = pytest.mark.integration


def z(hour: datetime) -> str:
    return f"{hour:%Y-%m-%dT%H:%M:%S}Z"


def mart(data: ServedData, sql: str, **params: Any) -> list[dict[str, Any]]:
    with data.admin.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql.format(marts=data.schemas.marts, ml=data.schemas.ml)),
                                              params).mappings()]


def number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@pytest.fixture(scope="module")
def client(api: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


def test_latest_forecast_is_what_the_production_model_served_for_the_next_hour(
        client: httpx.Client, served_data: ServedData) -> None:
    answer = client.get("/v1/forecasts/latest")
    assert answer.status_code == 200, answer.text
    [latest] = answer.json()["forecasts"]
    production = mart(served_data, "select model_version from {ml}.model_registry where status = 'production'")
    [stored] = mart(served_data, "select * from {ml}.predictions where target_hour = :t and role = 'production'",
                    t=NEWEST + HOUR)
    assert latest["product_id"] == PRODUCT
    assert latest["target_hour"] == z(NEWEST + HOUR) and latest["feature_hour"] == z(NEWEST)
    assert latest["model_version"] == production[0]["model_version"] == stored["model_version"]
    assert latest["is_fallback"] is False and latest["outcome"] == "model"
    assert latest["predicted_close"] == number(stored["predicted_close"])
    assert (latest["lower_80"], latest["upper_80"]) == (number(stored["lower_80"]), number(stored["upper_80"]))
    assert latest["lower_80"] < latest["predicted_close"] < latest["upper_80"]
    assert client.get("/v1/forecasts/latest", params={"product": PRODUCT}).json()["forecasts"] == [latest]


def test_a_week_of_forecasts_pages_through_every_served_hour_with_the_fallback_labelled(
        client: httpx.Client, served_data: ServedData) -> None:
    url: str | None = f"/v1/products/{PRODUCT}/forecasts?start={z(WEEK_START)}&end={z(NEWEST + 2 * HOUR)}&limit=50"
    items, pages = [], 0
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["count"] == len(body["items"]) <= 50
        items += body["items"]
        url, pages = body["next"], pages + 1
    stored = mart(served_data, "select * from {marts}.fct_forecast_outcomes order by target_hour")
    assert pages == 4 and len(items) == len(stored) == 168
    assert [i["target_hour"] for i in items] == [z(WEEK_START + HOUR + k * HOUR) for k in range(168)]
    assert [i["predicted_close"] for i in items] == [number(r["predicted_close"]) for r in stored]
    fallbacks = [i for i in items if i["is_fallback"]]
    assert [f["target_hour"] for f in fallbacks] == [z(MISSING + HOUR)]
    [fallback] = fallbacks
    assert fallback["reason_code"] == "candle_missing" and fallback["model_version"] is None
    assert fallback["lower_80"] is None and fallback["base_hour"] == z(MISSING - HOUR)
    # realized hours carry what happened; the next hour has not
    assert items[0]["realized_close"] is not None and items[-1]["realized_close"] is None
    # no range given: the newest week
    default = client.get(f"/v1/products/{PRODUCT}/forecasts", params={"limit": 200}).json()
    assert default["end"] == z(NEWEST + 2 * HOUR) and default["count"] == 168


def test_feature_rows_serve_a_documented_subset_or_the_fields_asked_for(
        client: httpx.Client, served_data: ServedData) -> None:
    from serve.marts import DEFAULT_FEATURE_FIELDS

    window = {"start": z(MISSING - 2 * HOUR), "end": z(MISSING + 2 * HOUR)}
    default = client.get(f"/v1/products/{PRODUCT}/features", params=window).json()
    assert default["fields"] == ["product_id", "hour", *DEFAULT_FEATURE_FIELDS]
    assert [set(row) for row in default["items"]] == [set(default["fields"])] * 4
    assert [row["is_missing_hour"] for row in default["items"]] == [0, 0, 1, 0]

    chosen = client.get(f"/v1/products/{PRODUCT}/features",
                        params={**window, "fields": "close,log_return_168h,target_close_1h"}).json()
    stored = mart(served_data, "select hour, close, log_return_168h, target_close_1h from {marts}.fct_candle_features "
                               "where hour >= :a and hour < :b order by hour",
                  a=MISSING - 2 * HOUR, b=MISSING + 2 * HOUR)
    assert chosen["items"] == [
        {"product_id": PRODUCT, "hour": z(r["hour"]), "close": number(r["close"]),
         "log_return_168h": r["log_return_168h"], "target_close_1h": number(r["target_close_1h"])} for r in stored
    ]


def test_leaderboard_ranks_every_model_with_the_production_one_marked(
        client: httpx.Client, served_data: ServedData) -> None:
    models = client.get("/v1/leaderboard", params={"product": PRODUCT}).json()["models"]
    stored = mart(served_data, "select * from {marts}.model_leaderboard "
                               "order by rank_168h is null, rank_168h, model_version")
    assert [m["model_version"] for m in models] == [r["model_version"] for r in stored]
    assert [m["mae_168h"] for m in models] == [number(r["mae_168h"]) for r in stored]
    assert [m["status"] for m in models].count("production") == 1
    # every model forecast every hour of the week (shadow forecasts): all ranked, on the same hours
    assert [m["rank_168h"] for m in models] == sorted(m["rank_168h"] for m in models)
    assert all(m["is_ranked_168h"] == 1 and m["n_168h"] == models[0]["n_168h"] for m in models)


def test_health_is_the_health_marts_200_while_the_cycle_runs_and_503_once_it_stopped(
        client: httpx.Client, served_data: ServedData) -> None:
    from fastapi.testclient import TestClient

    from serve.app import create_app

    fresh = client.get("/v1/health")
    assert fresh.status_code == 200, fresh.text
    [product] = fresh.json()["products"]
    [stored] = mart(served_data, "select * from {marts}.product_health")
    assert product["status"] == stored["status"] == "ok"
    assert product["cycle_hour"] == z(NEWEST + HOUR) and product["newest_raw_hour"] == z(NEWEST)
    # the missing hour (30 h before the newest) got a fallback: served, and counted as such in the week
    assert product["availability_24h"] == 1.0 and product["fallbacks_168h"] == 1
    assert product["production_model_version"] == stored["production_model_version"] is not None
    assert product["skill_168h"] == stored["skill_168h"]
    assert {c["name"]: c["status"] for c in product["checks"]} == {
        "cycle": "ok", "raw_lag_hours": "ok", "availability_24h": "ok", "production_model": "ok", "skill_168h": "ok",
        "coverage_80_168h": "ok"}
    assert fresh.headers["cache-control"] == "no-store"

    # four hours later with no new cycle: the mart still says ok, the API says the cycle stopped
    later = create_app(ApiSettings(), served_data.reader, clock=lambda: NOW + 4 * HOUR)
    with TestClient(later) as other:
        stale = other.get("/v1/health")
    assert stale.status_code == 503
    body = stale.json()
    assert body["status"] == "error"
    cycle = next(c for c in body["products"][0]["checks"] if c["name"] == "cycle")
    assert cycle["status"] == "error" and "4 h before the current hour" in cycle["detail"]


def test_health_says_503_when_the_mart_rates_a_product_an_error(served_data: ServedData) -> None:
    from fastapi.testclient import TestClient

    from serve.app import create_app

    table = f"`{served_data.schemas.marts}`.product_health"
    [before] = mart(served_data, "select status, failing_checks, skill_168h from {marts}.product_health")
    app = create_app(ApiSettings(), served_data.reader, clock=lambda: NOW)
    with served_data.admin.begin() as conn:  # what the mart says when the model loses to persistence
        conn.execute(text(f"update {table} set status = 'error', failing_checks = 'skill_168h', skill_168h = -0.05"))
    try:
        with TestClient(app) as c:
            answer = c.get("/v1/health")
    finally:
        with served_data.admin.begin() as conn:
            conn.execute(text(f"update {table} set status = :status, failing_checks = :failing_checks, "
                              "skill_168h = :skill_168h"), before)
    assert answer.status_code == 503
    checks = {c["name"]: c["status"] for c in answer.json()["products"][0]["checks"]}
    assert checks["skill_168h"] == "error" and checks["cycle"] == "ok"


@pytest.mark.parametrize(("path", "params", "status", "parameter", "words"), [
    ("/v1/products/BTC-USD/forecasts", {"start": "yesterday"}, 400, "start", "ISO 8601"),
    ("/v1/products/BTC-USD/forecasts", {"start": "2024-01-09", "end": "2024-01-08"}, 400, "end", "after start"),
    ("/v1/products/BTC-USD/forecasts", {"start": "2023-01-01", "end": "2024-01-01"}, 400, "end", "maximum of 31 days"),
    ("/v1/products/BTC-USD/features", {"fields": "close,secret_sauce"}, 400, "fields", "'secret_sauce'"),
    ("/v1/products/BTC-USD/features", {"limit": "5000"}, 422, "limit", "from 1 to 200"),
    ("/v1/products/BTC-USD/forecasts", {"limit": "ten"}, 422, "limit", "whole number"),
    ("/v1/products/DOGE-XYZ/forecasts", {}, 404, "product_id", "DOGE-XYZ"),
    ("/v1/products/btc;drop/features", {}, 404, "product_id", "btc;drop"),
    ("/v1/forecasts/latest", {"product": "DOGE-XYZ"}, 404, "product_id", "DOGE-XYZ"),
    ("/v1/leaderboard", {"product": "DOGE-XYZ"}, 404, "product_id", "DOGE-XYZ"),
])
def test_bad_input_gets_a_json_error_naming_the_parameter(
        client: httpx.Client, path: str, params: dict[str, str], status: int, parameter: str, words: str) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["parameter"] == parameter and words in error["message"]


def test_an_unknown_endpoint_is_a_json_404(client: httpx.Client) -> None:
    answer = client.get("/v1/nothing-here")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_a_poller_holding_the_current_version_gets_304_and_no_body(client: httpx.Client) -> None:
    first = client.get("/v1/forecasts/latest")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = client.get("/v1/forecasts/latest", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get("/v1/forecasts/latest", headers={"If-Modified-Since": modified}).status_code == 304
    older = format_datetime(datetime(2024, 1, 1, tzinfo=NOW.tzinfo), usegmt=True)
    assert client.get("/v1/forecasts/latest", headers={"If-Modified-Since": older}).status_code == 200
    assert client.get("/v1/forecasts/latest", headers={"If-None-Match": '"other"'}).status_code == 200
    head = client.head("/v1/forecasts/latest")  # curl -I: the validators, no body
    assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
    # another answer, another version
    week = client.get(f"/v1/products/{PRODUCT}/forecasts")
    assert week.headers["etag"] != etag
    assert client.get(f"/v1/products/{PRODUCT}/forecasts", headers={"If-None-Match": week.headers["etag"]}
                      ).status_code == 304


def test_with_keys_configured_only_a_request_carrying_one_is_served(
        served_data: ServedData, caplog: pytest.LogCaptureFixture) -> None:
    import base64

    from fastapi.testclient import TestClient

    from serve.app import create_app

    key, wrong = "k" * 8 + "correct-horse-battery", "k" * 8 + "wrong-horse-battery!!"
    app = create_app(ApiSettings(keys=(key, "another-key-0123456789")), served_data.reader, clock=lambda: NOW)
    basic = base64.b64encode(f"me:{key}".encode()).decode()
    with caplog.at_level(logging.DEBUG), TestClient(app) as c:
        assert c.get("/v1/forecasts/latest").status_code == 401
        refused = c.get("/v1/forecasts/latest", headers={"X-API-Key": wrong})
        assert refused.status_code == 401 and wrong not in refused.text
        assert c.get("/", headers={"X-API-Key": wrong}).headers["www-authenticate"].startswith("Bearer, Basic")
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}, {"Authorization": f"Basic {basic}"}):
            assert c.get("/v1/forecasts/latest", headers=headers).status_code == 200
        assert c.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        # a load balancer's probes need no key
        assert c.get("/v1/ping").status_code == 200 and c.get("/v1/health").status_code == 200
    assert key not in caplog.text and wrong not in caplog.text


def test_cors_is_off_unless_origins_are_configured(served_data: ServedData, client: httpx.Client) -> None:
    from fastapi.testclient import TestClient

    from serve.app import create_app

    origin = {"Origin": "https://dash.example.org"}
    assert "access-control-allow-origin" not in client.get("/v1/forecasts/latest", headers=origin).headers
    app = create_app(ApiSettings(cors_origins=("https://dash.example.org",)), served_data.reader, clock=lambda: NOW)
    with TestClient(app) as c:
        allowed = c.get("/v1/forecasts/latest", headers=origin)
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example.org"
        assert "access-control-allow-origin" not in c.get(
            "/v1/forecasts/latest", headers={"Origin": "https://evil.example.org"}).headers


def test_the_api_reads_as_the_reader_role_which_cannot_write(api: ThreadedServer, served_data: ServedData) -> None:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from serve.app import make_reader_engine

    engine = make_reader_engine(served_data.reader, ApiSettings())
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select current_user()")).scalar_one().startswith("reader@")
            with pytest.raises((OperationalError, ProgrammingError), match="denied"):
                conn.execute(text(f"delete from `{served_data.schemas.marts}`.fct_forecast_outcomes"))
    finally:
        engine.dispose()


def test_no_answer_holds_a_password(client: httpx.Client, served_data: ServedData) -> None:
    secrets = [v for k, v in os.environ.items() if k.endswith("_PASSWORD") and len(v) >= 8]
    assert secrets  # the session's roles have generated passwords
    paths = ["/", "/v1/products", "/v1/forecasts/latest", f"/v1/products/{PRODUCT}/forecasts",
             f"/v1/products/{PRODUCT}/features", "/v1/leaderboard", "/v1/health", "/v1/nothing", "/openapi.json"]
    for path in paths:
        answer = client.get(path)
        seen = answer.text + str(answer.headers)
        assert not [s for s in secrets if s in seen], path


def test_openapi_documents_every_endpoint(client: httpx.Client) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/v1/products", "/v1/forecasts/latest", "/v1/products/{product_id}/forecasts",
            "/v1/products/{product_id}/features", "/v1/leaderboard", "/v1/health", "/v1/ping", "/"} <= paths
    assert client.get("/docs").status_code == 200


def test_the_demo_ends_by_showing_the_served_forecast_and_how_to_open_the_dashboard(
        served_data: ServedData, client: httpx.Client) -> None:
    from demo.serve_step import serve_step

    [latest] = client.get("/v1/forecasts/latest").json()["forecasts"]
    summary = serve_step({**os.environ, "CANDLECAST_DB_SCHEMA": served_data.schemas.base})
    assert f"{PRODUCT} {z(NEWEST + HOUR)}: ${latest['predicted_close']:,.2f}" in summary
    assert summary.splitlines()[-1].startswith("open the dashboard: run `make serve`, then http://127.0.0.1:8090/")


def test_a_change_in_the_marts_reaches_consumers_within_the_cache_time_with_a_new_etag(
        served_data: ServedData) -> None:
    import time

    from fastapi.testclient import TestClient

    from serve.app import create_app

    app = create_app(ApiSettings(cache_seconds=1), served_data.reader, clock=lambda: NOW)
    table = f"`{served_data.schemas.marts}`.fct_forecast_outcomes"
    with TestClient(app) as c:
        first = c.get("/v1/forecasts/latest")
        old = first.json()["forecasts"][0]["predicted_close"]
        with served_data.admin.begin() as conn:
            conn.execute(text(f"update {table} set predicted_close = predicted_close + 1 where target_hour = :t"),
                         {"t": NEWEST + HOUR})
        try:
            cached = c.get("/v1/forecasts/latest")
            assert cached.headers["etag"] == first.headers["etag"]  # within the second: the cached answer
            time.sleep(1.1)
            fresh = c.get("/v1/forecasts/latest", headers={"If-None-Match": first.headers["etag"]})
            assert fresh.status_code == 200 and fresh.headers["etag"] != first.headers["etag"]
            assert fresh.json()["forecasts"][0]["predicted_close"] == pytest.approx(old + 1)
        finally:
            with served_data.admin.begin() as conn:
                conn.execute(text(f"update {table} set predicted_close = predicted_close - 1 where target_hour = :t"),
                             {"t": NEWEST + HOUR})


def test_a_long_answer_goes_gzipped_to_clients_that_accept_it_with_its_own_etag(client: httpx.Client) -> None:
    path = f"/v1/products/{PRODUCT}/forecasts"
    plain = client.get(path, headers={"Accept-Encoding": "identity"})
    packed = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers and packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert packed.json() == plain.json()  # httpx decodes it
    assert int(packed.headers["content-length"]) < len(plain.content) / 4
    assert packed.headers["etag"] == plain.headers["etag"][:-1] + '-gz"'
    # either tag names the same data
    for tag in (plain.headers["etag"], packed.headers["etag"]):
        assert client.get(path, headers={"If-None-Match": tag}).status_code == 304


def test_before_the_health_mart_is_built_health_says_so_and_the_dashboard_shows_the_rest(
        served_data: ServedData) -> None:
    from fastapi.testclient import TestClient

    from serve.app import create_app

    marts = f"`{served_data.schemas.marts}`"
    app = create_app(ApiSettings(), served_data.reader, clock=lambda: NOW)
    with served_data.admin.begin() as conn:
        conn.execute(text(f"rename table {marts}.product_health to {marts}.product_health_away"))
    try:
        with TestClient(app) as c:
            health = c.get("/v1/health")
            page = c.get("/")
    finally:
        with served_data.admin.begin() as conn:
            conn.execute(text(f"rename table {marts}.product_health_away to {marts}.product_health"))
    assert health.status_code == 503 and "not built yet" in health.json()["error"]["message"]
    assert page.status_code == 200
    assert 'id="health-status" class="warn">unknown' in page.text and 'id="next-close"' in page.text
