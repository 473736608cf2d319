"""The replay server's clock: it answers as the API did at a moment, over real HTTP (no client code of ours)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests

from tools.replay import CorrectedCandle, Fault, LateCandle, MissingCandle, ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration

HOUR = 3600
H = 1704801600  # 2024-01-09 12:00 UTC, a recorded hour near the sample's end


def candles(server: ReplayServer, start: int = H - 2 * HOUR, end: int = H + 2 * HOUR,
            timeout: float = 5) -> requests.Response:
    return requests.get(
        f"{server.url}/products/BTC-USD/candles", params={"granularity": 3600, "start": start, "end": end},
        timeout=timeout,
    )


def by_time(answer: requests.Response) -> dict[int, list[Decimal]]:
    return {row[0]: [Decimal(str(v)) for v in row[1:]] for row in answer.json()}


def recorded(series: CandleSeries, hour: int) -> list[Decimal]:
    return [Decimal(v) for v in series.rows[series.times.index(hour)]]


@pytest.fixture
def clocked(replay: ReplayServer) -> Iterator[ReplayServer]:
    replay.set_clock(H + 30 * 60)  # half-way through hour H
    yield replay


def test_with_a_clock_only_closed_hours_are_final_and_the_open_hour_shows_its_values_so_far(
    clocked: ReplayServer, series: CandleSeries
) -> None:
    got = by_time(candles(clocked))
    assert sorted(got) == [H - 2 * HOUR, H - HOUR, H]  # H + 1h has not begun
    assert got[H - HOUR] == recorded(series, H - HOUR)
    low, high, open_, close, volume = got[H]
    f_low, f_high, f_open, f_close, f_volume = recorded(series, H)
    assert open_ == f_open
    assert abs(close - (f_open + f_close) / 2) <= Decimal("0.01")  # half-way to the final close, in cents
    assert f_low <= low <= min(open_, close) and max(open_, close) <= high <= f_high
    assert abs(volume - f_volume / 2) <= Decimal("1e-8")


def test_the_open_hour_becomes_the_recorded_candle_when_it_closes(clocked: ReplayServer, series: CandleSeries) -> None:
    clocked.set_clock(H)  # the hour has just begun: no trade yet, no candle
    assert H not in by_time(candles(clocked))
    clocked.advance(HOUR)
    answer = candles(clocked, start=H, end=H)
    assert answer.text == f"[[{H},{','.join(series.rows[series.times.index(H)])}]]"


def test_without_a_clock_every_recorded_candle_is_served_whatever_is_scheduled(replay: ReplayServer) -> None:
    replay.schedule(MissingCandle(H), LateCandle(H - HOUR, 30))
    replay.inject(Fault.outage(0, 2**40))
    answer = candles(replay)
    assert answer.status_code == 200 and sorted(by_time(answer)) == [H + k * HOUR for k in range(-2, 3)]


def test_an_outage_fails_every_request_inside_its_clock_range_only(clocked: ReplayServer) -> None:
    clocked.inject(Fault.outage(H + HOUR, H + 3 * HOUR, status=503))
    statuses = []
    for _ in range(4):
        statuses.append(candles(clocked).status_code)
        clocked.advance(HOUR)
    assert statuses == [200, 503, 503, 200]  # clock at H+0.5h, +1.5h, +2.5h, +3.5h


def test_an_outage_of_timeouts_leaves_the_client_without_an_answer(clocked: ReplayServer) -> None:
    clocked.inject(Fault.outage(H, H + HOUR, hang_s=2.0))
    with pytest.raises(requests.exceptions.ReadTimeout):
        candles(clocked, timeout=0.3)
    clocked.advance(HOUR)
    assert candles(clocked).status_code == 200


def test_a_late_candle_appears_minutes_after_its_hour_closes(clocked: ReplayServer) -> None:
    clocked.schedule(LateCandle(H, minutes=20))
    seen = {}
    for minute in (30, 65, 79, 80):  # open, closed but not yet published, published
        clocked.set_clock(H + minute * 60)
        seen[minute] = H in by_time(candles(clocked))
    assert seen == {30: False, 65: False, 79: False, 80: True}


def test_a_missing_candle_is_never_published_and_its_neighbours_are(clocked: ReplayServer) -> None:
    clocked.schedule(MissingCandle(H - HOUR))
    clocked.set_clock(H + 30 * 24 * HOUR)
    assert sorted(by_time(candles(clocked))) == [H - 2 * HOUR, H, H + HOUR, H + 2 * HOUR]
    assert H - HOUR not in clocked.truth("BTC-USD")


def test_a_correction_changes_a_candle_from_its_clock_time_and_the_truth_follows(
    clocked: ReplayServer, series: CandleSeries
) -> None:
    clocked.schedule(CorrectedCandle(H - HOUR, at=H + 24 * HOUR))
    before = by_time(candles(clocked))[H - HOUR]
    clocked.set_clock(H + 24 * HOUR)
    after = by_time(candles(clocked))[H - HOUR]
    low, high, open_, close, volume = after
    assert before == recorded(series, H - HOUR)
    assert close != before[3] and volume != before[4]
    assert low <= min(open_, close) and high >= max(open_, close)
    assert [Decimal(v) for v in clocked.truth("BTC-USD")[H - HOUR]] == after


def test_a_truncated_answer_comes_at_its_clock_time_or_request_count_and_once(clocked: ReplayServer) -> None:
    clocked.inject(Fault.truncated(from_clock=H + HOUR, until_clock=H + 2 * HOUR), Fault.truncated(skip=3))
    bodies = []
    for _ in range(5):
        answer = candles(clocked)
        bodies.append((answer.status_code, answer.text.endswith("]]")))
        clocked.advance(30 * 60)
    # requests at H+0.5h, 1h, 1.5h, 2h, 2.5h: the first inside [H+1h, H+2h) is cut, then the 4th overall
    assert bodies == [(200, True), (200, False), (200, True), (200, False), (200, True)]
    served = [r.served for r in clocked.requests]
    assert served[1] == () and served[2][0] == H + HOUR  # what was delivered intact is on record


def test_runs_as_a_command_whose_clock_is_moved_over_http_outside_the_api() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.replay", "--port", "0", "--no-rate-limit", "--clock", "2024-01-09T12:30Z",
         "--late", f"{H}=20", "--outage", "2024-01-09T15:00Z..2024-01-09T16:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None  # stdout=PIPE
    try:
        url = proc.stdout.readline().split("COINBASE_API_URL=")[1].strip()
        api = f"{url}/products/BTC-USD/candles"
        params = {"granularity": 3600, "start": H - HOUR, "end": H + 3 * HOUR}

        def hours() -> list[int]:
            return sorted(row[0] for row in requests.get(api, params=params, timeout=5).json())

        assert requests.get(f"{url}/_replay/clock", timeout=5).json() == {"now": "2024-01-09T12:30:00Z",
                                                                          "unix": H + 1800}
        assert hours() == [H - HOUR]  # H is open but late: not even its partial candle
        moved = requests.post(f"{url}/_replay/clock", json={"advance_s": 3000}, timeout=5).json()
        assert moved["now"] == "2024-01-09T13:20:00Z" and hours() == [H - HOUR, H, H + HOUR]
        requests.post(f"{url}/_replay/clock", json={"now": "2024-01-09T15:10Z"}, timeout=5)
        assert requests.get(api, params=params, timeout=5).status_code == 503
        refused = requests.post(f"{url}/_replay/clock", json={"later": 1}, timeout=5)
        assert refused.status_code == 400 and "not changed" in refused.json()["message"]
        assert requests.post(api, json={"now": 0}, timeout=5).status_code == 405  # not under /products
    finally:
        proc.terminate()
        proc.wait(timeout=10)
