"""HTTP client for Coinbase Exchange public candles (or the project's replay server, same API).

``GET {api_url}/products/{product}/candles?granularity=3600&start=..&end=..``. Each attempt spends a token
from the rate limiter; 429, 5xx, timeouts, connection errors and a 200 whose body cannot be read as JSON
(empty, truncated, garbled, a proxy's HTML page) are retried with exponential backoff and jitter (or exactly
the server's ``Retry-After``), up to ``max_attempts``; then ``FetchError`` names the product, the window and
the last cause. A body that did not arrive whole is a transport failure, and the next attempt usually gets
the whole answer. Other 4xx, and well-formed JSON that is not an array of candles, fail at once
(``MalformedResponse``): repeating them would only repeat the same answer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from candlecast.settings import ExtractSettings
from extract import jsonnum
from extract.errors import FetchError, MalformedResponse
from extract.ratelimit import TokenBucket
from extract.windows import Window

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)


def retryable(status: int) -> bool:
    """429 (rate limited) and every 5xx, proxies' 520-599 included: the server may answer later."""
    return status == 429 or 500 <= status <= 599


class TransientError(Exception):
    """One failed attempt worth repeating; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delay-seconds or an HTTP date (RFC 9110); None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _snippet(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _root_cause(exc: Exception) -> str:
    """The OS-level reason inside urllib3's nested wrappers ("[Errno 111] Connection refused")."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return found.group(0).strip() if found else _snippet(text, 200)


def _error_message(response: requests.Response) -> str:
    """The API's ``{"message": ...}`` if there is one, else the start of whatever came back (a proxy's HTML)."""
    try:
        body = jsonnum.loads(response.text)
        if isinstance(body, dict) and "message" in body:
            return str(body["message"])
    except ValueError:
        pass
    kind = response.headers.get("Content-Type", "unknown content type")
    return f"{kind} body: {_snippet(response.text) or '(empty)'}"


class CoinbaseClient:
    def __init__(
        self,
        settings: ExtractSettings,
        limiter: TokenBucket | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import requests

        self.settings = settings
        self.limiter = limiter or TokenBucket(settings.rate_per_second, settings.burst)
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": settings.user_agent, "Accept": "application/json"})
        self._sleep = sleep
        self.requests_sent = 0
        self.retries = 0

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> CoinbaseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def candles_url(self, product_id: str) -> str:
        return f"{self.settings.api_url.rstrip('/')}/products/{quote(product_id, safe='')}/candles"

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        if hinted is not None:
            return min(float(hinted), self.settings.retry_after_max_s)
        backoff = wait_exponential_jitter(
            initial=self.settings.backoff_initial_s,
            max=self.settings.backoff_max_s,
            jitter=self.settings.backoff_initial_s,
        )
        return backoff(state)

    def _log_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        where = " window ".join(str(a) for a in state.args)  # (product_id, window)
        log.warning("%s: attempt %d failed (%s); retrying in %.2fs", where, state.attempt_number, exc, wait)

    def _attempt(self, product_id: str, window: Window) -> list[object]:
        import requests

        self.limiter.acquire()
        self.requests_sent += 1
        url = self.candles_url(product_id)
        try:
            response = self.session.get(url, params=window.request_params(), timeout=self.settings.timeout_s)
        except requests.Timeout as exc:
            raise TransientError(f"no answer within {self.settings.timeout_s:g}s ({type(exc).__name__})") from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientError(f"connection failed: {_root_cause(exc)}") from exc
        except requests.RequestException as exc:  # a bad URL, too many redirects: not worth repeating
            raise FetchError(f"{product_id} window {window}: request to {url} failed: {exc}") from exc

        if retryable(response.status_code):
            raise TransientError(
                f"HTTP {response.status_code}: {_error_message(response)}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code != 200:
            raise FetchError(
                f"{product_id} window {window}: {url} refused the request with HTTP {response.status_code}: "
                f"{_error_message(response)}"
            )
        return self._parse(product_id, window, response)

    def _parse(self, product_id: str, window: Window, response: requests.Response) -> list[object]:
        where = f"{product_id} window {window}"
        text = response.text
        try:
            body = jsonnum.loads(text)
        except ValueError as exc:
            content_type = response.headers.get("Content-Type", "")
            stripped = text.lstrip()
            if not stripped:
                what = f"an empty body ({len(response.content)} bytes)"
            elif "html" in content_type or stripped[:1] == "<":
                what = "an HTML page instead of JSON"
            elif stripped[:1] in "[{":
                what = f"a truncated or broken JSON body ({len(response.content)} bytes; {exc})"
            else:
                what = "a body that is not JSON"
            # Retried like a 5xx: what did not arrive whole (or came from a proxy) may arrive whole next time.
            raise TransientError(f"HTTP 200 but the API answered {what}: {_snippet(text)!r}") from exc
        if not isinstance(body, list):
            detail = f" (message: {body['message']})" if isinstance(body, dict) and "message" in body else ""
            raise MalformedResponse(
                f"{where}: expected a JSON array of candles, got a JSON {type(body).__name__}{detail}: "
                f"{_snippet(text)!r}"
            )
        return body

    def fetch_candles(self, product_id: str, window: Window) -> list[object]:
        """The raw elements of the answer for ``window`` (validated later, by ``extract.validate``)."""
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=self._log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, product_id, window)
        except TransientError as exc:
            raise FetchError(
                f"{product_id} window {window}: gave up after {self.settings.max_attempts} attempts "
                f"to {self.candles_url(product_id)}; last error: {exc}"
            ) from exc
