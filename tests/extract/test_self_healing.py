"""Hourly incremental runs heal what earlier runs missed: late and corrected candles, outages, bad answers.

Each run is ``pipeline.incremental`` as the hourly DAG calls it (``end`` = ``now`` = the interval's end),
against the replay server over real HTTP and the real MariaDB. What the API "does" between runs is played
with the replay server's fault injection: a candle left out of one answer, a value changed in one answer,
5xx for a while, a body cut short.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from candlecast.hours import HOUR, naive_utc
from candlecast.settings import Schemas
from extract import pipeline
from extract.errors import ExtractError, NeedsBackfill
from extract.pipeline import ExtractResult
from extract.windows import Window, from_unix, to_unix
from tests.extract.conftest import PRODUCT, expected_rows, fast_settings, stored_rows
from tests.extract.test_pipeline import GAPS, run_log
from tools.replay import Fault, ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration


def hourly(replay: ReplayServer, raw: Schemas, engine, end: datetime, **changes: object) -> ExtractResult:
    """One hourly run for the interval ending at ``end``, run right at its end."""
    [result] = pipeline.incremental([PRODUCT], end, engine=engine, schemas=raw,
                                    settings=fast_settings(replay.url, **changes), now=end)
    return result


def backfill(replay: ReplayServer, raw: Schemas, engine, start: datetime, end: datetime) -> None:
    pipeline.backfill(PRODUCT, start, end, engine=engine, schemas=raw, settings=fast_settings(replay.url))


def without(hour: datetime) -> Callable[[list[list[object]]], list[object]]:
    """An answer that does not (yet) have the candle of ``hour``."""
    return lambda rows: [r for r in rows if r[0] != to_unix(hour)]


def test_a_late_candle_absent_at_the_first_run_lands_on_the_next_hourly_run(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    t = start + 200 * HOUR
    backfill(replay, raw, loader_engine, start, t)
    late = t + 3 * HOUR  # the newest closed hour of the run ending at t + 4h, not published yet at HH:00:05
    replay.inject(Fault.malformed_candles(without(late)))

    first = hourly(replay, raw, loader_engine, t + 4 * HOUR)
    assert first.span == Window(t - 20 * HOUR, t + 4 * HOUR)  # three hours caught up, a day re-fetched
    assert (first.inserted, first.updated, first.unchanged, first.gaps) == (3, 0, 20, [late])
    assert naive_utc(late) not in stored_rows(loader_engine, raw)

    second = hourly(replay, raw, loader_engine, t + 5 * HOUR)
    assert (second.inserted, second.updated, second.unchanged, second.gaps) == (2, 0, 22, [])
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, t + 5 * HOUR)
    assert [(r["mode"], r["status"], r["gaps"]) for r in run_log(loader_engine, raw)[1:]] == [
        ("incremental", "success", 1), ("incremental", "success", 0)]


def test_a_candle_corrected_after_its_first_fetch_is_counted_as_updated_on_the_next_run(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    t = start + 200 * HOUR
    backfill(replay, raw, loader_engine, start, t)
    corrected = t - 5 * HOUR  # fetched long ago by the backfill; Coinbase now serves another volume

    def correct_volume(rows: list[list[object]]) -> list[list[object]]:
        for row in rows:
            if row[0] == to_unix(corrected):
                row[5] = row[5] + Decimal("0.5")  # type: ignore[operator]
        return rows

    replay.inject(Fault.malformed_candles(correct_volume))
    run = hourly(replay, raw, loader_engine, t + HOUR)
    assert (run.inserted, run.updated, run.unchanged) == (1, 1, 22)
    truth = expected_rows(series, corrected, corrected + HOUR)[naive_utc(corrected)]
    assert stored_rows(loader_engine, raw)[naive_utc(corrected)] == (*truth[:4], truth[4] + Decimal("0.5"))
    assert run_log(loader_engine, raw)[-1]["updated"] == 1


def test_an_hour_the_api_never_serves_stays_a_reported_gap_on_every_run_that_covers_it(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    first_missing = GAPS[0]  # the bundled sample's 2023-03-04 17:00..20:00, which the API never published
    backfill(replay, raw, loader_engine, first_missing - 48 * HOUR, first_missing)
    runs = [hourly(replay, raw, loader_engine, first_missing + h * HOUR) for h in (6, 7)]

    assert [r.gaps for r in runs] == [GAPS, GAPS]
    assert [r.inserted for r in runs] == [2, 1]  # 21:00 and 22:00, then 23:00
    stored = stored_rows(loader_engine, raw)
    assert all(naive_utc(g) not in stored for g in GAPS)  # never invented
    assert stored == expected_rows(series, first_missing - 48 * HOUR, first_missing + 7 * HOUR)
    assert [r["gaps"] for r in run_log(loader_engine, raw)[1:]] == [4, 4]


def test_catch_up_after_an_outage_fills_every_hour_it_missed(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    t = start + 200 * HOUR
    backfill(replay, raw, loader_engine, start, t)
    replay.inject(Fault.error(503, times=2 * 3))  # the API is down for two hourly runs (3 attempts each)
    for end in (t + HOUR, t + 2 * HOUR):
        with pytest.raises(ExtractError, match="gave up after 3 attempts"):
            hourly(replay, raw, loader_engine, end)

    back = hourly(replay, raw, loader_engine, t + 30 * HOUR)  # a 30-hour outage later, it answers again
    assert (back.status, back.inserted, back.gaps) == ("success", 30, [])
    assert back.span == Window(t, t + 30 * HOUR)
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, t + 30 * HOUR)
    assert [r["status"] for r in run_log(loader_engine, raw)] == ["success", "failed", "failed", "success"]


def test_a_product_further_behind_than_the_bound_is_told_to_backfill_with_the_exact_command(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = datetime(2021, 12, 14, tzinfo=UTC)
    assert from_unix(series.times[0]) == start
    t = start + 200 * HOUR  # the newest stored hour is 2021-12-22 07:00
    backfill(replay, raw, loader_engine, start, t)
    replay.reset_log()

    # NeedsBackfill: a scheduler fails the task at once, since no retry can help
    with pytest.raises(NeedsBackfill) as caught:
        hourly(replay, raw, loader_engine, t + 169 * HOUR)
    assert str(caught.value) == (
        "BTC-USD: the newest stored hour is 2021-12-22 07:00 UTC, 169 hours before the end 2021-12-29 09:00 UTC; "
        "an incremental run catches up at most 168 (CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS). Run a backfill: "
        "`python -m extract backfill --product BTC-USD --start 2021-12-22T08:00 --end 2021-12-29T09:00`"
    )
    assert not replay.requests  # nothing fetched: storing the newest hours would hide the hole behind them
    refused = run_log(loader_engine, raw)[-1]
    assert (refused["mode"], refused["status"], refused["error"]) == ("incremental", "failed", str(caught.value))

    # one hour less is within the bound: the run catches all of it up
    caught_up = hourly(replay, raw, loader_engine, t + 168 * HOUR)
    assert (caught_up.inserted, caught_up.span) == (168, Window(t, t + 168 * HOUR))


def test_a_truncated_or_empty_answer_is_retried_and_the_hourly_run_succeeds(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    t = start + 200 * HOUR
    backfill(replay, raw, loader_engine, start, t)
    replay.reset_log()
    replay.inject(Fault.truncated(), Fault.empty())

    run = hourly(replay, raw, loader_engine, t + 3 * HOUR)
    assert (run.status, run.inserted, run.unchanged) == ("success", 3, 21)
    assert [r.fault for r in replay.requests] == ["truncated", "empty", None]
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, t + 3 * HOUR)
