"""The FastAPI app: ``create_app(settings, db)`` is what ``python -m serve``, the tests and the benchmark run.

It connects as the ``reader`` role (``db`` is that role's settings; the role can only SELECT the marts) through
a pooled engine that pings each connection before use, so a restarted MariaDB is picked up by the next request
without restarting the API; while the database is down every data endpoint answers 503 with a body naming the
server and the cause. Answers are kept a few seconds per URL (``serve.cache``): the marts change hourly. The clock
(for health) comes from the caller; by default the wall clock, read per request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from candlecast.hours import HOUR
from candlecast.settings import ApiSettings, DbSettings, Schemas
from serve import health, marts
from serve.auth import require_key
from serve.cache import Answer, AnswerCache
from serve.encoding import dumps, iso_utc
from serve.errors import ApiError, database_unavailable, is_missing_table, is_unavailable, unknown_product
from serve.http_cache import JSON, conditional
from serve.params import fields_param, limit_param, product_param, time_range

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("serve")

API_VERSION = "1"
# Vendored Swagger UI (swagger-ui-dist from npm, with its licence and provenance) for /docs.
STATIC_DIR = Path(__file__).resolve().parent / "static"
PING_BODY = b'{"status":"ok"}'


@dataclass
class Backend:
    """The app's one way to the marts: the reader's pooled engine, the schemas, the settings and the clock."""

    engine: Engine
    schemas: Schemas
    where: str  # user@host:port, for messages (never the password)
    settings: ApiSettings
    clock: Callable[[], datetime]
    cache: AnswerCache
    _columns: tuple[str, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A pooled connection; the database being unreachable (or a mart not built yet) inside becomes
        ``ApiError`` 503; any other database error propagates (a 500: a fault of ours to fix, not an outage)."""
        from sqlalchemy.exc import DBAPIError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        try:
            with self.engine.connect() as conn:
                yield conn
        except PoolTimeout as exc:
            raise database_unavailable(self.where, exc) from exc
        except DBAPIError as exc:
            if is_unavailable(exc) or is_missing_table(exc):
                raise database_unavailable(self.where, exc) from exc
            raise

    def feature_columns(self, conn: Connection, refresh: bool = False) -> tuple[str, ...]:
        """The feature mart's columns, read once and again only when a request names one not seen (a full
        refresh may have added it)."""
        with self._lock:
            if self._columns and not refresh:
                return self._columns
        columns = marts.feature_columns(conn, self.schemas)
        with self._lock:
            self._columns = columns
        return columns


def make_reader_engine(db: DbSettings, settings: ApiSettings) -> Engine:
    from candlecast.db import make_engine

    return make_engine(
        db,
        connect_args={"connect_timeout": settings.db_timeout_s, "read_timeout": 30},
        pool_size=settings.pool_size,
        max_overflow=settings.pool_size,
        pool_timeout=settings.db_timeout_s,
        pool_recycle=3600,  # below MariaDB's wait_timeout, so the pool never hands out a connection it closed
    )


def forecast_item(row: marts.Row) -> dict[str, Any]:
    item = {c: row[c] for c in marts.FORECAST_COLUMNS}
    item["is_fallback"] = row["outcome"] != "model"
    return item


def _newest(rows: list[marts.Row], column: str, plus: timedelta = timedelta(0)) -> datetime | None:
    values = [r[column] for r in rows if r.get(column) is not None]
    return max(values) + plus if values else None


class HeadAsGet:
    """ASGI middleware: a HEAD request is answered as its GET would be, headers only (``curl -I``, link
    checkers, and pollers that only want the ETag); FastAPI's routes take GET alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def param(name: str, description: str, where: str = "query") -> dict[str, Any]:
    """One parameter as OpenAPI describes it. Handlers read their parameters from the request themselves:
    FastAPI's per-request solving of declared query parameters cost more CPU than a cached answer (profiled:
    two thirds of a cached 7-day range)."""
    return {"name": name, "in": where, "required": where == "path", "schema": {"type": "string"},
            "description": description}


def documented(*params: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": list(params)}


PRODUCT_QUERY = param("product", "one product id, e.g. BTC-USD")
PRODUCT_PATH = param("product_id", "a product id, e.g. BTC-USD", "path")
START = param("start", "ISO 8601, inclusive (UTC unless an offset is given)")
END = param("end", "ISO 8601, exclusive; default start + 7 days, or the newest week without either")
FIELDS = param("fields", "comma-separated columns of fct_candle_features; default: "
                         + ", ".join(marts.DEFAULT_FEATURE_FIELDS))


def _json_error(exc: ApiError) -> Response:
    return Response(content=exc.body(), status_code=exc.status, headers=exc.headers, media_type=JSON)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ())]
        parameter = loc[-1] if loc else None
        return _json_error(ApiError(422, "bad_parameter", f"{parameter}: {first.get('msg', 'invalid')}",
                                    parameter=parameter))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no such endpoint: {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return _json_error(ApiError(exc.status_code, code, message, headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("500 on %s", request.url.path)
        return _json_error(ApiError(500, "internal_error", "internal error; it is in the server's log"))


def create_app(settings: ApiSettings, db: DbSettings, *, clock: Callable[[], datetime] | None = None,
               engine: Engine | None = None) -> FastAPI:
    """The API and dashboard over ``db`` (the reader role's settings)."""
    backend = Backend(
        engine=engine if engine is not None else make_reader_engine(db, settings),
        schemas=db.schemas, where=db.describe(), settings=settings,
        clock=clock or (lambda: datetime.now(UTC)),
        cache=AnswerCache(settings.cache_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        backend.engine.dispose()

    app = FastAPI(
        title="candlecast read API",
        version=API_VERSION,
        description="Forecasts of the next hourly close, the feature mart, the leaderboard and pipeline health, "
                    "read from the marts as the reader role. Times are ISO 8601 UTC; ranges are [start, end).",
        lifespan=lifespan,
        # FastAPI's own pages load their scripts from a CDN: /docs is served below from vendored files instead.
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(HeadAsGet)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="candlecast read API",
                                   swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="data:,")
    app.state.backend = backend
    max_span = timedelta(days=settings.max_range_days)
    _install_error_handlers(app)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET"],
            allow_headers=["Authorization", "X-API-Key", "If-None-Match", "If-Modified-Since"],
            expose_headers=["ETag", "Last-Modified"],
        )

    def guard(request: Request) -> None:
        require_key(request, settings.keys)

    limit_doc = param("limit", f"rows per page (default {settings.default_page_size}, at most "
                               f"{settings.max_page_size}: CANDLECAST_API_MAX_PAGE_SIZE)")

    def cache_key(request: Request) -> str:
        return request.scope["path"] + "?" + request.scope["query_string"].decode("latin-1")

    def respond(request: Request, result: Answer, media_type: str = JSON) -> Response:
        return conditional(request, result.body, result.last_modified, media_type, result.etag, result.gzipped,
                           result.last_modified_header)

    def cached(request: Request) -> Response | None:
        """The cached answer to this very URL, if any: its parameters were checked when it was computed."""
        hit = backend.cache.fresh(cache_key(request))
        return respond(request, hit) if hit is not None else None

    async def answer(request: Request, compute: Callable[[], Answer], media_type: str = JSON) -> Response:
        """``compute`` (a blocking read of the marts) through the cache, as a conditional response."""
        return respond(request, await backend.cache.get(cache_key(request), compute), media_type)

    @app.get("/v1/ping", tags=["meta"], summary="Liveness: a constant, no database")
    async def ping() -> Response:
        return Response(content=PING_BODY, media_type=JSON)

    @app.get("/v1/products", tags=["products"], summary="Every product, its first and newest hour")
    async def list_products(request: Request) -> Response:
        guard(request)
        if (hit := cached(request)) is not None:
            return hit

        def compute() -> Answer:
            with backend.read() as conn:
                rows = marts.products(conn, backend.schemas)
            return Answer.of(dumps({"products": rows}), _newest(rows, "newest_hour", HOUR))

        return await answer(request, compute)

    @app.get("/v1/forecasts/latest", tags=["forecasts"],
             summary="Per product, the forecast served for its newest target hour",
             openapi_extra=documented(PRODUCT_QUERY))
    async def latest(request: Request) -> Response:
        guard(request)
        if (hit := cached(request)) is not None:
            return hit
        product = request.query_params.get("product")
        wanted = product_param(product) if product else None

        def compute() -> Answer:
            with backend.read() as conn:
                rows = marts.latest_forecasts(conn, backend.schemas, wanted)
                if wanted and not rows and not marts.product_exists(conn, backend.schemas, wanted):
                    raise unknown_product(wanted)
            return Answer.of(dumps({"forecasts": [forecast_item(r) for r in rows]}), _newest(rows, "updated_at"))

        return await answer(request, compute)

    @app.get("/v1/products/{product_id}/forecasts", tags=["forecasts"],
             summary="What was served for each target hour of [start, end), paged",
             openapi_extra=documented(PRODUCT_PATH, START, END, limit_doc))
    async def forecast_range(request: Request) -> Response:
        guard(request)
        if (hit := cached(request)) is not None:
            return hit
        query = request.query_params
        start, end, limit = query.get("start"), query.get("end"), query.get("limit")
        product = product_param(request.path_params["product_id"])
        page = limit_param(limit, settings.default_page_size, settings.max_page_size)
        if start or end:  # checked before any database work
            time_range(start, end, max_span, None)

        def compute() -> Answer:
            with backend.read() as conn:
                newest = marts.newest_target_hour(conn, backend.schemas, product) if not (start or end) else None
                first, last = time_range(start, end, max_span, newest + HOUR if newest else None)
                rows = marts.forecasts(conn, backend.schemas, product, first, last, page + 1)
                if not rows and not marts.product_exists(conn, backend.schemas, product):
                    raise unknown_product(product)
            more = len(rows) > page
            rows = rows[:page]
            following = None
            if more:
                following = request.url.path + "?" + urlencode(
                    {"start": iso_utc(rows[-1]["target_hour"] + HOUR), "end": iso_utc(last), "limit": page})
            body = dumps({"product_id": product, "start": first, "end": last, "limit": page, "count": len(rows),
                          "items": [forecast_item(r) for r in rows], "next": following})
            return Answer.of(body, _newest(rows, "updated_at"))

        return await answer(request, compute)

    @app.get("/v1/products/{product_id}/features", tags=["features"],
             summary="Feature rows of [start, end), paged; fields= picks the mart's columns",
             openapi_extra=documented(PRODUCT_PATH, START, END, FIELDS, limit_doc))
    async def feature_range(request: Request) -> Response:
        guard(request)
        if (hit := cached(request)) is not None:
            return hit
        query = request.query_params
        start, end, fields, limit = query.get("start"), query.get("end"), query.get("fields"), query.get("limit")
        product = product_param(request.path_params["product_id"])
        page = limit_param(limit, settings.default_page_size, settings.max_page_size)
        if start or end:
            time_range(start, end, max_span, None)

        def compute() -> Answer:
            with backend.read() as conn:
                columns = backend.feature_columns(conn)
                try:
                    chosen = fields_param(fields, marts.DEFAULT_FEATURE_FIELDS, columns)
                except ApiError:
                    chosen = fields_param(fields, marts.DEFAULT_FEATURE_FIELDS, backend.feature_columns(conn, True))
                newest = marts.newest_hour(conn, backend.schemas, product) if not (start or end) else None
                first, last = time_range(start, end, max_span, newest + HOUR if newest else None)
                rows = marts.features(conn, backend.schemas, product, first, last, chosen, page + 1)
                if not rows and not marts.product_exists(conn, backend.schemas, product):
                    raise unknown_product(product)
            more = len(rows) > page
            rows = rows[:page]
            following = None
            if more:
                query = {"start": iso_utc(rows[-1]["hour"] + HOUR), "end": iso_utc(last), "limit": page}
                if fields:
                    query["fields"] = ",".join(chosen)
                following = request.url.path + "?" + urlencode(query)
            body = dumps({"product_id": product, "start": first, "end": last, "limit": page,
                          "fields": [*marts.FEATURE_KEY, *(c for c in chosen if c not in marts.FEATURE_KEY)],
                          "count": len(rows), "items": rows, "next": following})
            return Answer.of(body, _newest(rows, "hour", HOUR))

        return await answer(request, compute)

    @app.get("/v1/leaderboard", tags=["models"],
             summary="Per product and model: trailing MAE, skill against persistence, coverage, rank",
             openapi_extra=documented(PRODUCT_QUERY))
    async def leaderboard(request: Request) -> Response:
        guard(request)
        if (hit := cached(request)) is not None:
            return hit
        product = request.query_params.get("product")
        wanted = product_param(product) if product else None

        def compute() -> Answer:
            with backend.read() as conn:
                rows = marts.leaderboard(conn, backend.schemas, wanted)
                if wanted and not rows and not marts.product_exists(conn, backend.schemas, wanted):
                    raise unknown_product(wanted)
            return Answer.of(dumps({"models": rows}), _newest(rows, "as_of_hour", HOUR))

        return await answer(request, compute)

    @app.get("/v1/health", tags=["meta"],
             summary="The health mart per product (raw lag, availability, production model, trailing skill and "
                     "coverage) and whether the cycle still runs: 200, or 503 on an error",
             responses={503: {"description": "some check is an error, or the database is unavailable"}})
    def health_report(request: Request) -> Response:
        # Never cached (a load balancer asks for the truth now) and open without a key: statuses, hours, model
        # names and skill, no prices.
        with backend.read() as conn:
            rows = marts.product_health(conn, backend.schemas)
        body = health.report(rows, backend.clock(), settings)
        status = 503 if body["status"] == "error" else 200
        return Response(content=dumps(body), status_code=status, media_type=JSON,
                        headers={"Cache-Control": "no-store"})

    @app.get("/", response_class=HTMLResponse, tags=["dashboard"], summary="The dashboard page",
             openapi_extra=documented(PRODUCT_QUERY))
    async def dashboard_page(request: Request) -> Response:
        from serve import dashboard

        product = request.query_params.get("product")

        def compute() -> Answer:
            with backend.read() as conn:
                view = dashboard.read_view(conn, backend.schemas, wanted, backend.clock(), settings)
            if wanted and view.product is None:
                raise unknown_product(wanted)
            return Answer.of(dashboard.render(view).encode("utf-8"), view.last_modified)

        try:
            guard(request)
            wanted = product_param(product) if product else None
            response = await answer(request, compute, "text/html; charset=utf-8")
        except ApiError as exc:
            # A person reads this one: the same status and message, as a page.
            response = HTMLResponse(dashboard.error_page(exc.status, exc.message), status_code=exc.status,
                                    headers=exc.headers)
        response.headers["Content-Security-Policy"] = dashboard.CONTENT_SECURITY_POLICY
        return response

    return app


def app_from_env() -> FastAPI:
    """The app from the environment (``CANDLECAST_API_*`` and the reader's login): uvicorn's factory."""
    from candlecast.settings import api_settings, db_settings

    return create_app(api_settings(), db_settings("reader"))
