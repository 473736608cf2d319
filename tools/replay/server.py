"""A Coinbase-compatible candles endpoint over a recorded CSV, for offline runs and tests.

``GET /products/{product}/candles?granularity=3600&start=ISO8601&end=ISO8601`` answers as the Exchange API
does: granularity checked, HTTP 400 when the range spans more than 300 candles, only hours that exist,
newest first, optionally some candles before ``start`` (``spill_before``; the API documents that it may),
HTTP 429 beyond its own token bucket (10/s, burst 15 by default, per client address), and every error as
JSON ``{"message": ...}``. ``end`` is inclusive, as in the API. Faults can be injected (see ``faults``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from extract import jsonnum
from extract.ratelimit import TokenBucket
from tools.replay.data import CandleSeries, bundled_series
from tools.replay.faults import Fault, FaultPlan

log = logging.getLogger(__name__)

GRANULARITIES = (60, 300, 900, 3600, 21600, 86400)
SERVED_GRANULARITY = 3600
MAX_CANDLES = 300
CANDLES_PATH = re.compile(r"^/products/([^/]+)/candles/?$")
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
    status: int
    fault: str | None


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
    ) -> None:
        if series is None:
            bundled = bundled_series()
            series = {bundled.product_id: bundled}
        self.series = dict(series)
        self.rate, self.burst = rate, burst
        self.spill_before = spill_before
        self.faults = FaultPlan()
        self._records: list[RequestRecord] = []
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.replay = self
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
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
        if has_start:
            start = _parse_time("start", query["start"][0])
            end = _parse_time("end", query["end"][0])
        else:  # the API's default: the latest candles
            end = series.times[-1] if series.times else 0
            start = end - (MAX_CANDLES - 1) * granularity
        if end < start:
            raise ApiError(400, "start must be before end")
        if (end - start) // granularity + 1 > MAX_CANDLES:
            raise ApiError(
                400, "granularity too small for the requested time range. Count of aggregations requested exceeds 300"
            )
        first = start - start % granularity - self.spill_before * granularity
        indexes = series.between(first, end)
        picked = list(reversed(indexes))[:MAX_CANDLES]
        return [[series.times[i], *series.rows[i]] for i in picked]

    def handle(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        split = urlsplit(handler.path)
        match = CANDLES_PATH.match(split.path)
        product_id = unquote(match.group(1)) if match else None
        query = parse_qs(split.query, keep_blank_values=True)
        fault: Fault | None = None
        if not self._allowed(handler.client_address[0]):
            reply = _json_reply(429, {"message": "Public rate limit exceeded"})
        elif match is None or product_id is None:
            reply = _json_reply(404, {"message": "NotFound"})
        else:
            fault = self.faults.take(product_id)
            if fault is not None and fault.kind == "action" and fault.action is not None:
                fault.action()
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay_s)
            reply = self._reply(product_id, query, fault)
        # Logged before the answer leaves, so a client that has its answer can already see the record.
        self._record(RequestRecord(arrived, product_id, split.query, reply.status, fault.kind if fault else None))
        try:
            handler.send_reply(reply)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client hung up before the answer to %s (a timeout, usually)", handler.path)

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
        if kind == "wrong_shape":
            return _json_reply(200, {"candles": "unavailable", "message": "maintenance"})
        try:
            rows = self.candle_rows(product_id, query)
        except ApiError as exc:
            return _json_reply(exc.status, {"message": exc.message})
        if fault is not None and kind == "mutate" and fault.mutate is not None:
            parsed = [[r[0], *(Decimal(str(v)) for v in r[1:])] for r in rows]
            body = jsonnum.dumps(fault.mutate(parsed)).encode()
        else:
            body = ("[" + ",".join(f"[{r[0]},{','.join(map(str, r[1:]))}]" for r in rows) + "]").encode()
        if kind == "truncated":
            body = body[: max(1, len(body) // 2)]
        return Reply(200, body, "application/json; charset=utf-8")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


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
