"""Backfill and incremental runs over real HTTP into the real MariaDB (base ct_extract)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from candlecast.hours import HOUR, naive_utc
from candlecast.settings import Schemas
from extract import pipeline
from extract.errors import ExtractError
from extract.pipeline import RunFailed
from extract.windows import from_unix
from tests.extract.conftest import PRODUCT, expected_rows, fast_settings, sample_bounds, stored_rows
from tools.replay import Fault, ReplayServer
from tools.replay.data import CandleSeries

pytestmark = pytest.mark.integration

GAPS = [datetime(2023, 3, 4, h, tzinfo=UTC) for h in (17, 18, 19, 20)]


def run_log(engine, schemas: Schemas) -> list[dict]:
    with engine.connect() as conn:
        result = conn.exec_driver_sql(
            f"select run_id, product_id, mode, window_start, window_end, requested, received, inserted, updated, "
            f"rejected, gaps, status, error, duration_s from `{schemas.raw}`.extract_runs order by started_at"
        )
        return [dict(row._mapping) for row in result]


def ingested(engine, schemas: Schemas) -> dict:
    with engine.connect() as conn:
        return dict(conn.exec_driver_sql(f"select bucket_start, ingested_at from `{schemas.raw}`.candles").all())


def backfill(replay: ReplayServer, raw: Schemas, engine, start: datetime, end: datetime, **kw):
    settings = kw.pop("settings", None) or fast_settings(replay.url)
    return pipeline.backfill(PRODUCT, start, end, engine=engine, schemas=raw, settings=settings, **kw)


def test_full_backfill_stores_every_candle_exactly_reports_the_four_gaps_and_reruns_as_a_no_op(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start, end = sample_bounds(series)
    result = backfill(replay, raw, loader_engine, start, end)

    assert (result.status, result.requested, result.windows) == ("success", 18_168, 61)
    assert (result.received, result.inserted, result.updated, result.unchanged, result.rejected) == (
        18_164, 18_164, 0, 0, 0)
    assert result.gaps == GAPS
    assert "4 missing hours (2023-03-04 17:00..20:00 UTC)" in result.summary()
    stored = stored_rows(loader_engine, raw)
    assert len(stored) == 18_164
    assert stored == expected_rows(series)  # every value of every hour, as Decimals
    assert all(naive_utc(g) not in stored for g in GAPS)  # reported, never invented
    (log,) = run_log(loader_engine, raw)
    assert (log["status"], log["mode"], log["requested"], log["received"], log["inserted"], log["gaps"]) == (
        "success", "backfill", 18_168, 18_164, 18_164, 4)
    assert log["window_start"] == naive_utc(start) and log["window_end"] == naive_utc(end)
    assert log["error"] is None and log["duration_s"] > 0

    # and the whole range again: nothing changes, nothing is re-stamped
    stamps = ingested(loader_engine, raw)
    again = backfill(replay, raw, loader_engine, start, end)
    assert (again.inserted, again.updated, again.unchanged, again.gaps) == (0, 0, 18_164, GAPS)
    assert stored_rows(loader_engine, raw) == stored and ingested(loader_engine, raw) == stamps


def test_rerunning_a_range_changes_nothing(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    end = start + 1000 * HOUR
    backfill(replay, raw, loader_engine, start, end)
    before_rows, before_stamps = stored_rows(loader_engine, raw), ingested(loader_engine, raw)

    again = backfill(replay, raw, loader_engine, start, end)
    overlapping = backfill(replay, raw, loader_engine, start + 500 * HOUR, end + 10 * HOUR)

    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1000)
    assert (overlapping.inserted, overlapping.updated, overlapping.unchanged) == (10, 0, 500)
    after_stamps = ingested(loader_engine, raw)
    assert stored_rows(loader_engine, raw) == before_rows | expected_rows(series, end, end + 10 * HOUR)
    assert all(after_stamps[h] == stamp for h, stamp in before_stamps.items())  # ingested_at not bumped
    assert [r["status"] for r in run_log(loader_engine, raw)] == ["success"] * 3


def test_a_corrected_candle_is_counted_as_updated_and_restamped(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    backfill(replay, raw, loader_engine, start, start + 24 * HOUR)
    before = ingested(loader_engine, raw)
    fixed_hour = series.times[5]

    def correct_volume(rows: list[list[object]]) -> list[list[object]]:
        for row in rows:
            if row[0] == fixed_hour:
                row[5] = row[5] + Decimal("0.5")  # type: ignore[operator]
        return rows

    replay.inject(Fault.malformed_candles(correct_volume))
    result = backfill(replay, raw, loader_engine, start, start + 24 * HOUR)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 23)
    hour = naive_utc(from_unix(fixed_hour))
    assert stored_rows(loader_engine, raw)[hour][4] == Decimal(series.rows[5][4]) + Decimal("0.5")
    after = ingested(loader_engine, raw)
    assert after[hour] > before[hour]
    assert all(after[h] == before[h] for h in before if h != hour)


def test_the_open_hour_is_never_stored(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    now = start + 10 * HOUR + timedelta(minutes=37)  # the 10:00 bucket is still open
    result = backfill(replay, raw, loader_engine, start, start + 48 * HOUR, now=now)
    assert result.span.end == start + 10 * HOUR
    stored = stored_rows(loader_engine, raw)
    assert max(stored) == naive_utc(start + 9 * HOUR) and len(stored) == 10

    # the same for an incremental run told "end = now" by its caller
    [inc] = pipeline.incremental([PRODUCT], now + 5 * HOUR, engine=loader_engine, schemas=raw,
                                 settings=fast_settings(replay.url), now=now + HOUR)
    # the trailing day is re-fetched, but never before the product's first stored hour
    assert inc.span == type(inc.span)(start, start + 11 * HOUR)
    assert (inc.inserted, inc.unchanged) == (1, 10)
    assert max(stored_rows(loader_engine, raw)) == naive_utc(start + 10 * HOUR)


def test_incremental_resumes_after_the_last_stored_hour_and_rechecks_the_trailing_day(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    backfill(replay, raw, loader_engine, start, start + 100 * HOUR)
    results = pipeline.incremental([PRODUCT], start + 250 * HOUR, engine=loader_engine, schemas=raw,
                                   settings=fast_settings(replay.url))
    assert [(r.span.start, r.span.end, r.inserted, r.unchanged) for r in results] == [
        (start + 100 * HOUR, start + 250 * HOUR, 150, 0)]
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, start + 250 * HOUR)
    # caught up: the trailing day is fetched again, finds nothing new, and that is a success
    [idle] = pipeline.incremental([PRODUCT], start + 250 * HOUR, engine=loader_engine, schemas=raw,
                                  settings=fast_settings(replay.url))
    assert (idle.requested, idle.windows, idle.unchanged, idle.status) == (24, 1, 24, "success")
    # with no re-fetch window, a caught-up run has nothing to do
    [none] = pipeline.incremental([PRODUCT], start + 250 * HOUR, engine=loader_engine, schemas=raw,
                                  settings=fast_settings(replay.url, refetch_hours=0))
    assert (none.requested, none.windows, none.status) == (0, 0, "success")


def test_incremental_with_nothing_stored_needs_an_initial_start(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    with pytest.raises(ExtractError, match="BTC-USD: no candles stored yet; run a backfill first"):
        pipeline.incremental([PRODUCT], start + 5 * HOUR, engine=loader_engine, schemas=raw,
                             settings=fast_settings(replay.url))
    [result] = pipeline.incremental([PRODUCT], start + 5 * HOUR, engine=loader_engine, schemas=raw,
                                    settings=fast_settings(replay.url), initial_start=start)
    assert result.inserted == 5


def test_candles_before_start_and_repeated_candles_are_stored_once(
    raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    with ReplayServer({series.product_id: series}, rate=None, spill_before=7) as server:
        server.inject(Fault.malformed_candles(lambda rows: rows + rows[:3], times=100))  # each page repeats 3
        start = from_unix(series.times[0]) + 24 * HOUR
        result = backfill(server, raw, loader_engine, start, start + 700 * HOUR)
    # the API caps an answer at 300 candles, newest first: only the last, partial window has room for the 7
    assert result.inserted == 700 and result.duplicates == 3 * 3 and result.outside == 7
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, start + 700 * HOUR)


def test_bad_candles_go_to_rejects_with_their_reason_and_the_rest_is_loaded(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    start = from_unix(series.times[0])
    bad_high, bad_time = series.times[3], series.times[4]

    def break_two(rows: list[list[object]]) -> list[list[object]]:
        for row in rows:
            if row[0] == bad_high:
                row[2] = Decimal(1)  # high below everything
            if row[0] == bad_time:
                row[0] = bad_time + 60  # not an hour
        return rows

    replay.inject(Fault.malformed_candles(break_two))
    result = backfill(replay, raw, loader_engine, start, start + 10 * HOUR)
    assert (result.inserted, result.rejected, result.status) == (8, 2, "success")
    assert sorted(stored_rows(loader_engine, raw)) == [
        naive_utc(from_unix(t)) for t in series.times[:10] if t not in (bad_high, bad_time)]
    with loader_engine.connect() as conn:
        rejects = conn.exec_driver_sql(
            f"select run_id, bucket_start, raw_payload, reason from `{raw.raw}`.candle_rejects order by reason"
        ).all()
    assert [r.reason for r in rejects] == [
        f"high 1 is below max(open, close) {max(Decimal(series.rows[3][2]), Decimal(series.rows[3][3]))}",
        f"time {bad_time + 60} is not aligned to an hour",
    ]
    assert rejects[0].bucket_start == naive_utc(from_unix(bad_high)) and rejects[1].bucket_start is None
    assert rejects[0].raw_payload.startswith(f"[{bad_high},") and {r.run_id for r in rejects} == {result.run_id}
    assert run_log(loader_engine, raw)[0]["rejected"] == 2


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.garbage(times=5, skip=2), "gave up after 3 attempts"),
        (Fault.truncated(times=5, skip=2), "a truncated or broken JSON body"),
        (Fault.wrong_shape(skip=2), "expected a JSON array of candles"),
        (Fault.error(503, times=5, skip=2), "gave up after 3 attempts"),
    ],
    ids=["garbage-exhausted", "truncated-exhausted", "wrong-shape", "5xx-exhausted"],
)
def test_a_bad_answer_fails_its_window_clearly_with_nothing_half_written(
    replay: ReplayServer, raw: Schemas, loader_engine, series: CandleSeries, fault: Fault, expected: str
) -> None:
    start = from_unix(series.times[0])
    replay.inject(fault)  # the third window's answer is bad
    with pytest.raises(RunFailed) as caught:
        backfill(replay, raw, loader_engine, start, start + 1500 * HOUR)
    message = str(caught.value)
    third = f"BTC-USD window [{start + 600 * HOUR:%Y-%m-%d %H:%M}, {start + 900 * HOUR:%Y-%m-%d %H:%M}) UTC"
    assert message.startswith(third) and expected in message
    # the two windows before it are complete and exact; nothing of the failed window or after it
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, start + 600 * HOUR)
    assert caught.value.result.inserted == 600 and caught.value.result.windows == 2
    (log,) = run_log(loader_engine, raw)
    assert (log["status"], log["inserted"], log["received"]) == ("failed", 600, 600)
    assert log["error"] == message

    # and a re-run completes the range with exact data
    result = backfill(replay, raw, loader_engine, start, start + 1500 * HOUR)
    assert (result.inserted, result.unchanged) == (900, 600)
    assert stored_rows(loader_engine, raw) == expected_rows(series, start, start + 1500 * HOUR)


def test_an_inverted_range_is_refused_before_anything_happens(
    replay: ReplayServer, raw: Schemas, loader_engine
) -> None:
    t = datetime(2023, 1, 2, tzinfo=UTC)
    with pytest.raises(ExtractError, match="end 2023-01-01 00:00 is before start 2023-01-02 00:00"):
        backfill(replay, raw, loader_engine, t, t - 24 * HOUR)
    assert not replay.requests and not run_log(loader_engine, raw)


def test_tiny_and_huge_values_are_stored_exactly_and_compare_unchanged(
    raw: Schemas, loader_engine
) -> None:
    from extract.load import upsert_candles
    from extract.validate import parse_candle

    hour = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    candle = parse_candle("SHIB-USD", [hour, Decimal("0.00000001"), Decimal("0.000000123456"),
                                       Decimal("1E-7"), Decimal("0.0000001"), Decimal("987654321098765432109.5")])
    with loader_engine.begin() as conn:
        assert upsert_candles(conn, raw, [candle]).inserted == 1
    with loader_engine.begin() as conn:
        assert upsert_candles(conn, raw, [candle]).unchanged == 1
    stored = stored_rows(loader_engine, raw, "SHIB-USD")[naive_utc(candle.bucket_start)]
    assert stored == candle.values()
    assert stored[2].as_tuple().exponent == -12  # came back as DECIMAL(30,12), not a double


def test_an_unreachable_database_is_a_clear_error_before_any_request(replay: ReplayServer) -> None:
    from candlecast.db import make_engine
    from candlecast.settings import DbSettings
    from extract.errors import LoadError

    nowhere = make_engine(DbSettings("127.0.0.1", 1, "loader", "x", Schemas("ct_extract"), connect_timeout=2))
    t = datetime(2023, 1, 1, tzinfo=UTC)
    with pytest.raises(LoadError, match=r"cannot create or check the raw tables in ct_extract_raw: .*Can.t connect"):
        pipeline.backfill(PRODUCT, t, t + HOUR, engine=nowhere, schemas=Schemas("ct_extract"),
                          settings=fast_settings(replay.url))
    assert not replay.requests


def test_incremental_runs_every_product_and_names_the_ones_that_failed(
    raw: Schemas, loader_engine, series: CandleSeries
) -> None:
    eth = CandleSeries("ETH-USD", series.times, series.rows)  # same numbers, another product id
    start = from_unix(series.times[0])
    with ReplayServer({"BTC-USD": series, "ETH-USD": eth}, rate=None) as server:
        settings = fast_settings(server.url)
        with pytest.raises(ExtractError) as caught:
            pipeline.incremental(["BTC-USD", "DOGE-USD", "ETH-USD"], start + 30 * HOUR, engine=loader_engine,
                                 schemas=raw, settings=settings, initial_start=start)
    assert str(caught.value).startswith("DOGE-USD window [2021-12-14 00:00, 2021-12-15 06:00) UTC: ")
    assert "HTTP 404: NotFound" in str(caught.value)
    for product in ("BTC-USD", "ETH-USD"):
        assert stored_rows(loader_engine, raw, product) == expected_rows(series, start, start + 30 * HOUR)
    statuses = {r["product_id"]: r["status"] for r in run_log(loader_engine, raw)}
    assert statuses == {"BTC-USD": "success", "DOGE-USD": "failed", "ETH-USD": "success"}
