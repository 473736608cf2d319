"""The replay server answers as the Coinbase Exchange API does (real HTTP, no client code of ours)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from tools.replay import ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration

GAP_START = 1677949200  # 2023-03-04 17:00 UTC, the first of the 4 hours the API left out


def get(server: ReplayServer, product: str = "BTC-USD", **params: int | str) -> requests.Response:
    return requests.get(f"{server.url}/products/{product}/candles", params=params, timeout=5)


def test_answers_newest_first_with_only_the_hours_that_exist(replay: ReplayServer) -> None:
    answer = get(replay, granularity=3600, start="2023-03-04T15:00:00Z", end="2023-03-04T22:00:00Z")
    assert answer.status_code == 200
    times = [row[0] for row in answer.json()]
    assert times == sorted(times, reverse=True)
    hours = [(t - GAP_START) // 3600 for t in times]
    assert hours == [5, 4, -1, -2]  # 22:00, 21:00, 16:00, 15:00: 17:00..20:00 do not exist


def test_values_are_the_recorded_ones_in_the_apis_order(replay: ReplayServer, series: CandleSeries) -> None:
    answer = get(replay, granularity=3600, start=series.times[0], end=series.times[0])
    # time, low, high, open, close, volume: byte-for-byte the CSV's numbers
    assert answer.text == f"[[{series.times[0]},{','.join(series.rows[0])}]]"


@pytest.mark.parametrize("granularity", ["", "3601", "abc", "120"])
def test_an_unsupported_granularity_is_a_400_with_a_json_message(replay: ReplayServer, granularity: str) -> None:
    answer = get(replay, granularity=granularity, start="2023-01-01T00:00:00Z", end="2023-01-01T05:00:00Z")
    assert answer.status_code == 400
    assert answer.json() == {"message": "Unsupported granularity"}


def test_more_than_300_candles_is_a_400_and_exactly_300_is_fine(replay: ReplayServer) -> None:
    ok = get(replay, granularity=3600, start="2023-01-01T00:00:00Z", end="2023-01-13T11:00:00Z")
    too_many = get(replay, granularity=3600, start="2023-01-01T00:00:00Z", end="2023-01-13T12:00:00Z")
    assert ok.status_code == 200 and len(ok.json()) == 300
    assert too_many.status_code == 400
    assert "exceeds 300" in too_many.json()["message"]


def test_unknown_products_and_paths_are_404_with_json_bodies(replay: ReplayServer) -> None:
    assert get(replay, "DOGE-EUR", granularity=3600).json() == {"message": "NotFound"}
    answer = requests.get(f"{replay.url}/products", timeout=5)
    assert answer.status_code == 404 and answer.json() == {"message": "NotFound"}


def test_candles_before_start_may_come_along_like_the_real_api(series: CandleSeries) -> None:
    with ReplayServer({series.product_id: series}, rate=None, spill_before=3) as server:
        answer = get(server, granularity=3600, start=series.times[10], end=series.times[12])
    assert [row[0] for row in answer.json()] == list(reversed(series.times[7:13]))


def test_beyond_its_token_bucket_it_answers_429(series: CandleSeries) -> None:
    with ReplayServer({series.product_id: series}, rate=10, burst=15) as server:
        statuses = [get(server, granularity=3600).status_code for _ in range(20)]
        time.sleep(0.25)  # two tokens back
        after_pause = get(server, granularity=3600)
    assert statuses[:15] == [200] * 15
    assert 429 in statuses[15:]
    assert after_pause.status_code == 200
    refused = [r for r in server.requests if r.status == 429]
    assert refused


def test_rate_limit_errors_have_the_apis_message(series: CandleSeries) -> None:
    with ReplayServer({series.product_id: series}, rate=1, burst=1) as server:
        get(server, granularity=3600)
        answer = get(server, granularity=3600)
    assert answer.status_code == 429 and answer.json() == {"message": "Public rate limit exceeded"}


def test_runs_as_a_command_on_a_port_of_its_choosing() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.replay", "--port", "0", "--no-rate-limit"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None  # stdout=PIPE
    try:
        line = proc.stdout.readline()
        assert "serving BTC-USD (18,164 candles)" in line
        url = line.split("COINBASE_API_URL=")[1].strip()
        answer = requests.get(f"{url}/products/BTC-USD/candles", params={"granularity": 3600}, timeout=5)
        assert answer.status_code == 200 and len(answer.json()) == 300
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_synthetic_products_are_seeded_valid_candles_with_occasional_gaps_served_beside_the_sample() -> None:
    from datetime import UTC, datetime

    from extract.jsonnum import loads
    from extract.validate import validate_window
    from extract.windows import Window
    from tools.replay import synthetic_products, with_synthetic

    products = with_synthetic(20)
    assert list(products)[:3] == ["BTC-USD", "SYN001-USD", "SYN002-USD"] and len(products) == 21
    again = synthetic_products(20)
    assert all(list(again[p].rows) == list(products[p].rows) for p in again)  # the same seed, the same candles
    hours = sum(len(s) for p, s in products.items() if p != "BTC-USD")
    # every product ends where the sample ends, and about one hour in 2,000 is not published at all
    end = products["BTC-USD"].times[-1]
    assert all(end - 3 * 3600 <= s.times[-1] <= end for s in again.values())
    assert 0 < 20 * 2016 - hours < 100
    with ReplayServer(products, rate=None) as server:
        synthetic = again["SYN007-USD"]
        first, last = synthetic.times[-300], synthetic.times[-1]
        answer = get(server, "SYN007-USD", granularity=3600, start=first, end=last)
        window = Window(datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last + 3600, UTC))
        elements = loads(answer.text)
        assert isinstance(elements, list)
        checked = validate_window("SYN007-USD", window, elements)
    # what the extractor would store: every served candle passes its checks (positive, low <= open/close <= high)
    assert answer.status_code == 200 and checked.rejects == [] and len(checked.candles) == 300
