"""The HTTP client against the replay server's fault injection: retries, backoff, Retry-After, clear errors.

Waits are measured on the server's side, from the arrival times of the requests it logged.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import pytest

from candlecast.hours import HOUR
from candlecast.settings import ExtractSettings
from extract.coinbase import CoinbaseClient, parse_retry_after
from extract.errors import FetchError, MalformedResponse
from extract.windows import Window, from_unix
from tests.extract.conftest import fast_settings
from tools.replay import Fault, ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration

WINDOW = Window(datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 1, 2, tzinfo=UTC))


def gaps(server: ReplayServer) -> list[float]:
    arrivals = [r.at for r in server.requests]
    return [b - a for a, b in itertools.pairwise(arrivals)]


def test_sends_a_user_agent_and_gets_the_windows_candles(replay: ReplayServer) -> None:
    with CoinbaseClient(fast_settings(replay.url)) as client:
        elements = client.fetch_candles("BTC-USD", WINDOW)
        assert client.session.headers["User-Agent"].startswith("candlecast-extract/")
    assert len(elements) == 24
    newest = elements[0]
    assert isinstance(newest, list) and newest[0] == int((WINDOW.end - HOUR).timestamp())  # newest first, as sent


def test_5xx_is_retried_with_exponential_backoff(replay: ReplayServer) -> None:
    replay.inject(Fault.error(503, times=2))
    settings = fast_settings(replay.url, backoff_initial_s=0.2, backoff_max_s=5.0)
    with CoinbaseClient(settings) as client:
        assert len(client.fetch_candles("BTC-USD", WINDOW)) == 24
    assert [r.status for r in replay.requests] == [503, 503, 200]
    first, second = gaps(replay)
    assert first >= 0.2 and second >= 0.4  # initial, then doubled (plus up to `initial` of jitter)
    assert first < 1.0 and second < 1.5  # generous: the machine may be busy, but not the Retry-After path


def test_retry_after_is_honoured_exactly_instead_of_the_backoff(replay: ReplayServer) -> None:
    replay.inject(Fault.rate_limited(retry_after="1"))
    with CoinbaseClient(fast_settings(replay.url, backoff_initial_s=0.01)) as client:
        client.fetch_candles("BTC-USD", WINDOW)
    assert [r.status for r in replay.requests] == [429, 200]
    (waited,) = gaps(replay)
    assert 1.0 <= waited < 2.0


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:02 GMT", now=now) == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_a_slow_answer_times_out_and_is_retried(replay: ReplayServer) -> None:
    replay.inject(Fault.slow(1.5))
    with CoinbaseClient(fast_settings(replay.url, timeout_s=0.3)) as client:
        assert len(client.fetch_candles("BTC-USD", WINDOW)) == 24
        assert client.retries == 1


@pytest.mark.parametrize("status", [502, 520])
def test_attempts_are_bounded_and_the_error_names_product_window_and_cause(replay: ReplayServer, status: int) -> None:
    replay.inject(Fault.error(status, times=10))
    with CoinbaseClient(fast_settings(replay.url, max_attempts=3)) as client, pytest.raises(FetchError) as caught:
        client.fetch_candles("BTC-USD", WINDOW)
    message = str(caught.value)
    assert "BTC-USD window [2023-01-01 00:00, 2023-01-02 00:00) UTC" in message
    assert "after 3 attempts" in message and f"HTTP {status}" in message and "Internal server error" in message
    assert len(replay.requests) == 3


def test_a_gateways_html_error_page_is_retried_then_named(replay: ReplayServer) -> None:
    replay.inject(Fault.html(status=502, times=5))
    with CoinbaseClient(fast_settings(replay.url, max_attempts=2)) as client, pytest.raises(FetchError) as caught:
        client.fetch_candles("BTC-USD", WINDOW)
    assert "HTTP 502: text/html" in str(caught.value) and "502 Bad Gateway" in str(caught.value)


def test_connection_refused_is_retried_then_named() -> None:
    with ReplayServer(rate=None) as server:
        url = server.url
    with CoinbaseClient(fast_settings(url, max_attempts=2)) as client, pytest.raises(FetchError) as caught:
        client.fetch_candles("BTC-USD", WINDOW)
    assert "connection failed" in str(caught.value) and "after 2 attempts" in str(caught.value)


def test_a_4xx_is_not_retried(replay: ReplayServer) -> None:
    with CoinbaseClient(fast_settings(replay.url)) as client, pytest.raises(FetchError) as caught:
        client.fetch_candles("NOPE-USD", WINDOW)
    assert "NOPE-USD window" in str(caught.value) and "HTTP 404: NotFound" in str(caught.value)
    assert len(replay.requests) == 1


@pytest.mark.parametrize(
    "fault",
    [Fault.truncated(), Fault.empty(), Fault.garbage(), Fault.html(status=200)],
    ids=["truncated", "empty", "garbage", "html"],
)
def test_a_200_whose_body_is_not_readable_json_is_retried_after_a_backoff(replay: ReplayServer, fault: Fault) -> None:
    replay.inject(fault)
    with CoinbaseClient(fast_settings(replay.url, backoff_initial_s=0.2)) as client:
        assert len(client.fetch_candles("BTC-USD", WINDOW)) == 24
        assert client.retries == 1
    assert [(r.status, r.fault) for r in replay.requests] == [(200, fault.kind), (200, None)]
    (waited,) = gaps(replay)
    assert waited >= 0.2


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (Fault.truncated(times=10), "HTTP 200 but the API answered a truncated or broken JSON body"),
        (Fault.empty(times=10), "HTTP 200 but the API answered an empty body (0 bytes)"),
        (Fault.garbage(times=10), "HTTP 200 but the API answered a body that is not JSON"),
        (Fault.html(times=10), "HTTP 200 but the API answered an HTML page instead of JSON"),
    ],
    ids=["truncated", "empty", "garbage", "html"],
)
def test_an_unreadable_200_every_time_gives_up_naming_product_window_and_cause(
    replay: ReplayServer, fault: Fault, cause: str
) -> None:
    replay.inject(fault)
    with CoinbaseClient(fast_settings(replay.url, max_attempts=3)) as client, pytest.raises(FetchError) as caught:
        client.fetch_candles("BTC-USD", WINDOW)
    message = str(caught.value)
    assert message.startswith("BTC-USD window [2023-01-01 00:00, 2023-01-02 00:00) UTC: gave up after 3 attempts")
    assert f"last error: {cause}" in message
    assert len(replay.requests) == 3


def test_well_formed_json_that_is_not_candles_fails_at_once(replay: ReplayServer) -> None:
    replay.inject(Fault.wrong_shape())
    with CoinbaseClient(fast_settings(replay.url)) as client, pytest.raises(MalformedResponse) as caught:
        client.fetch_candles("BTC-USD", WINDOW)
    assert str(caught.value) == (
        "BTC-USD window [2023-01-01 00:00, 2023-01-02 00:00) UTC: expected a JSON array of candles, got a JSON "
        "dict (message: maintenance): '{\"candles\": \"unavailable\", \"message\": \"maintenance\"}'"
    )
    assert len(replay.requests) == 1  # repeating a well-formed answer would only repeat it


def test_the_default_limit_stays_inside_the_servers_bucket(series: CandleSeries) -> None:
    """10/s with burst 10 against the API's 10/s burst 15: paced, and never a 429."""
    with ReplayServer({series.product_id: series}, rate=10, burst=15) as server:
        settings = ExtractSettings(api_url=server.url)
        assert (settings.rate_per_second, settings.burst) == (10.0, 10)
        began = time.monotonic()
        with CoinbaseClient(settings) as client:
            for i in range(25):
                start = from_unix(series.times[0]) + i * HOUR
                client.fetch_candles("BTC-USD", Window(start, start + HOUR))
        elapsed = time.monotonic() - began
    assert [r.status for r in server.requests] == [200] * 25
    assert elapsed >= (25 - 10) / 10  # the burst, then one request per 100 ms


def test_a_client_faster_than_the_server_gets_429s_and_still_completes(series: CandleSeries) -> None:
    with ReplayServer({series.product_id: series}, rate=2, burst=2) as server:
        with CoinbaseClient(fast_settings(server.url, max_attempts=8, backoff_initial_s=0.05)) as client:
            for i in range(4):
                start = from_unix(series.times[0]) + i * HOUR
                assert len(client.fetch_candles("BTC-USD", Window(start, start + HOUR))) == 1
    statuses = [r.status for r in server.requests]
    assert statuses.count(200) == 4 and statuses.count(429) >= 2
