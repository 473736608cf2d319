"""A Coinbase-compatible candles endpoint over a recorded CSV, for offline runs and tests.

``GET /products/{product}/candles?granularity=3600&start=ISO8601&end=ISO8601`` answers as the Exchange API
does: granularity checked, HTTP 400 when the range spans more than 300 candles, only hours that exist,
newest first, optionally some candles before ``start`` (``spill_before``; the API documents that it may),
HTTP 429 beyond its own token bucket (10/s, burst 15 by default, per client address), and every error as
JSON ``{"message": ...}``. ``end`` is inclusive, as in the API. Faults can be injected (see ``faults``).

Time: without a clock (the default) every recorded candle is served. With ``clock`` set (``set_clock``,
``advance``, or ``POST /_replay/clock`` from outside) the server answers as the API did at that moment:
closed hours only, the open hour with its values so far, and the ``timeline``'s late, missing and corrected
candles; faults with a clock range (``Fault.outage``, ``Fault.truncated(from_clock=...)``) fire inside it.

``/_replay/...`` is the dev-only admin interface (never under ``/products``, not rate limited, not logged as
an API request): ``GET /_replay/clock`` says ``{"now": ISO | null, "unix": int | null}``; ``POST
/_replay/clock`` with ``{"now": ISO | UNIX | null}`` sets it, with ``{"advance_s": N}`` moves it; both answer
the new state. Pass ``admin=False`` (``--no-admin``) to turn it off.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from extract import jsonnum
from extract.ratelimit import TokenBucket
from tools.replay.clock import HOUR_S, Moment, ReplayClock, iso, to_unix
from tools.replay.data import CandleSeries, bundled_series
from tools.replay.faults import Fault, FaultPlan
from tools.replay.timeline import Event, Row, Timeline

log = logging.getLogger(__name__)

GRANULARITIES = (60, 300, 900, 3600, 21600, 86400)
SERVED_GRANULARITY = 3600
MAX_CANDLES = 300
CANDLES_PATH = re.compile(r"^/products/([^/]+)/candles/?$")
ADMIN_PREFIX = "/_replay/"
HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>The upstream server is temporarily unavailable.</p></body></html>"
)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestRecord:
    at: float  # time.monotonic() on arrival
    product_id: str | None
    query: str
    status: int  # 0: no answer was sent (a hang)
    fault: str | None
    clock: int | None = None  # the server's clock on arrival (UNIX seconds), if set
    served: tuple[int, ...] = ()  # bucket starts of the candles delivered intact in a 200 answer


def _parse_time(name: str, raw: str) -> int:
    raw = raw.strip()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", raw):
            return int(float(raw))
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, f"Invalid {name}: {raw!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class ReplayServer:
    """Run with ``start()``/``stop()`` or as a context manager; ``port=0`` picks a free port."""

    def __init__(
        self,
        series: Mapping[str, CandleSeries] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None = 10.0,
        burst: int = 15,
        spill_before: int = 0,
        clock: ReplayClock | None = None,
        admin: bool = True,
    ) -> None:
        if series is None:
            bundled = bundled_series()
            series = {bundled.product_id: bundled}
        self.series = dict(series)
        self.rate, self.burst = rate, burst
        self.spill_before = spill_before
        self.faults = FaultPlan()
        self.clock = clock or ReplayClock()
        self.timeline = Timeline()
        self.admin = admin
        self._stopping = threading.Event()  # releases hanging answers on stop()
        self._records: list[RequestRecord] = []
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.replay = self
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.socket.getsockname()[:2]  # what server_address holds once bound: a str host
        return f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-server", daemon=True
            )
            self._thread.start()
            log.info("replay server on %s", self.url)
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests look at --------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        self.faults.add(*faults)

    def schedule(self, *events: Event) -> None:
        """Late, missing or corrected candles (``timeline``); they apply once the clock is set."""
        self.timeline.add(*events)

    def set_clock(self, moment: Moment | None) -> int | None:
        """The API's "now" (``None``: no clock, every recorded candle is served)."""
        return self.clock.set(moment)

    def advance(self, by: timedelta | float) -> int:
        """Move the clock forward by a timedelta or seconds."""
        return self.clock.advance(by)

    def truth(self, product_id: str, now: Moment | None = None) -> dict[int, Row]:
        """Every closed candle the API publishes at ``now`` (default: the clock), ``{bucket start: (low, high,
        open, close, volume)}``: what a client that fetched everything at that moment should hold."""
        series = self.series[product_id]
        at = self.clock.now() if now is None else to_unix(now)
        rows = {}
        for t, row in zip(series.times, series.rows, strict=True):
            if at is not None and t + HOUR_S > at:
                break
            values = self.timeline.published(product_id, t, row, at)
            if values is not None:
                rows[t] = values
        return rows

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def reset_log(self) -> None:
        with self._lock:
            self._records.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _allowed(self, client: str) -> bool:
        if self.rate is None:
            return True
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = TokenBucket(self.rate, self.burst)
        return bucket.try_acquire()[0]

    # --- the API -------------------------------------------------------------------------------------

    def candle_rows(self, product_id: str, query: Mapping[str, list[str]]) -> list[list[object]]:
        """The answer's rows, newest first, or ``ApiError`` as the API would refuse the request."""
        series = self.series.get(product_id)
        if series is None:
            raise ApiError(404, "NotFound")
        raw_granularity = query.get("granularity", [""])[0]
        try:
            granularity = int(raw_granularity)
        except ValueError:
            granularity = -1
        if granularity not in GRANULARITIES:
            raise ApiError(400, "Unsupported granularity")
        if granularity != SERVED_GRANULARITY:
            raise ApiError(400, f"the replay server holds hourly candles only (granularity={SERVED_GRANULARITY})")
        has_start, has_end = "start" in query, "end" in query
        if has_start != has_end:
            raise ApiError(400, "start and end must be given together")
        now = self.clock.now()
        if has_start:
            start = _parse_time("start", query["start"][0])
            end = _parse_time("end", query["end"][0])
        else:  # the API's default: the latest candles (up to the open hour, with a clock)
            end = series.times[-1] if series.times else 0
            if now is not None:
                end = min(end, now - now % granularity)
            start = end - (MAX_CANDLES - 1) * granularity
        if end < start:
            raise ApiError(400, "start must be before end")
        if (end - start) // granularity + 1 > MAX_CANDLES:
            raise ApiError(
                400, "granularity too small for the requested time range. Count of aggregations requested exceeds 300"
            )
        first = start - start % granularity - self.spill_before * granularity
        if now is not None:
            end = min(end, now)  # nothing after the clock exists yet
        rows: list[list[object]] = []
        for i in reversed(series.between(first, end)):
            values = self.timeline.published(product_id, series.times[i], series.rows[i], now)
            if values is not None:
                rows.append([series.times[i], *values])
                if len(rows) == MAX_CANDLES:
                    break
        return rows

    def handle(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        split = urlsplit(handler.path)
        if split.path.startswith(ADMIN_PREFIX) and self.admin:
            self._send(handler, self._admin(handler, split.path))
            return
        if handler.command != "GET":
            handler.close_connection = True  # its body is left unread
            self._send(handler, _json_reply(405, {"message": "Method not allowed"}))
            return
        match = CANDLES_PATH.match(split.path)
        product_id = unquote(match.group(1)) if match else None
        query = parse_qs(split.query, keep_blank_values=True)
        now = self.clock.now()
        fault: Fault | None = None
        if not self._allowed(handler.client_address[0]):
            reply = _json_reply(429, {"message": "Public rate limit exceeded"})
        elif match is None or product_id is None:
            reply = _json_reply(404, {"message": "NotFound"})
        else:
            fault = self.faults.take(product_id, now)
            if fault is not None and fault.kind == "action" and fault.action is not None:
                fault.action()
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay_s)
            if fault is not None and fault.kind == "hang":
                self._record(RequestRecord(arrived, product_id, split.query, 0, fault.kind, now))
                self._stopping.wait(fault.delay_s)
                handler.close_connection = True  # no answer: the client sees a timeout or a dropped connection
                return
            reply = self._reply(product_id, query, fault)
        # Logged before the answer leaves, so a client that has its answer can already see the record.
        self._record(RequestRecord(
            arrived, product_id, split.query, reply.status, fault.kind if fault else None, now, reply.served
        ))
        self._send(handler, reply)

    def _send(self, handler: _Handler, reply: Reply) -> None:
        try:
            handler.send_reply(reply)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client hung up before the answer to %s (a timeout, usually)", handler.path)

    def _admin(self, handler: _Handler, path: str) -> Reply:
        """The dev-only clock control (see the module docstring)."""
        if path.rstrip("/") != ADMIN_PREFIX + "clock":
            return _json_reply(404, {"message": f"no admin resource {path}; there is {ADMIN_PREFIX}clock"})
        if handler.command == "POST":
            try:
                length = int(handler.headers.get("Content-Length") or 0)
                body = json.loads(handler.rfile.read(length) or b"{}")
                if not isinstance(body, dict) or len(body.keys() & {"now", "advance_s"}) != 1:
                    raise ValueError('send {"now": ISO 8601 | UNIX seconds | null} or {"advance_s": seconds}')
                if "now" in body:
                    self.clock.set(body["now"])
                else:
                    self.clock.advance(float(body["advance_s"]))
            except (ValueError, TypeError, RuntimeError) as exc:
                return _json_reply(400, {"message": f"clock not changed: {exc}"})
            log.info("replay clock set to %s", self._clock_state()["now"])
        elif handler.command != "GET":
            return _json_reply(405, {"message": "GET or POST"})
        return _json_reply(200, self._clock_state())

    def _clock_state(self) -> dict[str, object]:
        now = self.clock.now()
        return {"now": None if now is None else iso(now), "unix": now}

    def _reply(self, product_id: str, query: Mapping[str, list[str]], fault: Fault | None) -> Reply:
        kind = fault.kind if fault else None
        if fault is not None and kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            message = "Public rate limit exceeded" if fault.status == 429 else "Internal server error"
            return _json_reply(fault.status, {"message": message}, headers)
        if fault is not None and kind == "html":
            return Reply(fault.status, HTML_PAGE.encode(), "text/html; charset=utf-8")
        if kind == "garbage":
            return Reply(200, b"\x00\x9f garbage \xff not json", "application/json")
        if kind == "empty":
            return Reply(200, b"", "application/json; charset=utf-8")
        if kind == "wrong_shape":
            return _json_reply(200, {"candles": "unavailable", "message": "maintenance"})
        try:
            rows = self.candle_rows(product_id, query)
        except ApiError as exc:
            return _json_reply(exc.status, {"message": exc.message})
        served = tuple(int(r[0]) for r in rows)  # type: ignore[call-overload]
        if fault is not None and kind == "mutate" and fault.mutate is not None:
            parsed = [[r[0], *(Decimal(str(v)) for v in r[1:])] for r in rows]
            body = jsonnum.dumps(fault.mutate(parsed)).encode()
            served = ()
        else:
            body = ("[" + ",".join(f"[{r[0]},{','.join(map(str, r[1:]))}]" for r in rows) + "]").encode()
        if kind == "truncated":
            body = body[: max(1, len(body) // 2)]
            served = ()
        return Reply(200, body, "application/json; charset=utf-8", served=served)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    served: tuple[int, ...] = ()


def _json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers or {})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    replay: ReplayServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API behind a load balancer offers
    server_version = "candlecast-replay/0.1"
    timeout = 30  # an idle keep-alive connection frees its thread after this
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.replay.handle(self)

    def do_POST(self) -> None:  # the admin interface only; the API itself is GET-only
        self.server.replay.handle(self)

    def send_reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)
