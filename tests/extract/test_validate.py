"""Strict candle validation: each rule, and normalising an answer to exactly the requested window."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from candlecast.hours import HOUR
from extract import jsonnum
from extract.validate import CandleError, parse_candle, validate_window
from extract.windows import Window

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS = int(T0.timestamp())
D = Decimal


def good(ts: int = TS) -> list[object]:
    return [ts, D("99.5"), D("101.25"), D("100"), D("100.5"), D("12.34567891")]


def test_a_good_candle_is_parsed_in_the_tables_column_order() -> None:
    candle = parse_candle("BTC-USD", good())
    assert candle.bucket_start == T0
    assert candle.values() == (D("100"), D("101.25"), D("99.5"), D("100.5"), D("12.34567891"))


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ([TS, 1, 2, 1, 1], "expected an array of 6 numbers"),
        ([TS, 1, 2, 1, 1, 1, 1], "expected an array of 6 numbers"),
        ({"time": TS}, "expected an array of 6 numbers"),
        ("garbage", "expected an array of 6 numbers"),
        ([D("1704067200.5"), 1, 2, 1, 1, 1], "time is not an integer"),
        (["1704067200", 1, 2, 1, 1, 1], "time is not an integer"),
        ([TS + 60, 1, 2, 1, 1, 1], "not aligned to an hour"),
        ([TS, "1", 2, 1, 1, 1], "low is not a number"),
        ([TS, 1, None, 1, 1, 1], "high is not a number"),
        ([TS, 1, 2, True, 1, 1], "open is not a number"),
        ([TS, 1, 2, 1, float("nan"), 1], "close is not a finite number"),
        ([TS, 1, 2, 1, 1, float("inf")], "volume is not a finite number"),
        ([TS, 0, 2, 1, 1, 1], "low 0 is not a positive price"),
        ([TS, D("1.5"), 2, 1, D("1.8"), 1], "low 1.5 is above min(open, close) 1"),
        ([TS, 1, D("1.7"), D("1.8"), D("1.2"), 1], "high 1.7 is below max(open, close) 1.8"),
        ([TS, 1, 2, 1, 1, D("-0.0001")], "volume -0.0001 is negative"),
        ([TS, 1, D("1e18"), 1, 1, 1], "does not fit the raw table"),
    ],
)
def test_each_rule_rejects_with_a_reason(element: object, reason: str) -> None:
    with pytest.raises(CandleError, match=re.escape(reason)):
        parse_candle("BTC-USD", element)


def test_values_are_kept_exactly_to_the_tables_twelve_decimals() -> None:
    candle = parse_candle("SHIB-USD", [TS, D("0.000008"), D("0.0000091"), D("0.0000085"), D("0.000009"),
                                       D("123456789012.123456789")])
    assert candle.low == D("0.000008") and candle.high == D("0.0000091")
    assert candle.volume == D("123456789012.123456789")  # 9 decimals fit the 12: kept as sent
    rounded = parse_candle("X-USD", [TS, D("1.0000000000004"), D("2"), D("1.5"), D("1.5"), D("0")])
    assert rounded.low == D("1.000000000000")  # quantised as the DECIMAL(30,12) column will store it


def test_nan_in_an_answer_is_parsed_then_rejected_not_fatal() -> None:
    elements = jsonnum.loads(f"[[{TS},NaN,2,1,1,1],[{TS + 3600},1,2,1,1,1]]")
    assert isinstance(elements, list)
    result = validate_window("BTC-USD", Window(T0, T0 + 2 * HOUR), elements)
    assert [c.bucket_start for c in result.candles] == [T0 + HOUR]
    assert [(r.bucket_start, r.reason) for r in result.rejects] == [(T0, "low is not a finite number: nan")]
    assert r"NaN" in result.rejects[0].raw_payload


def test_newest_first_answers_come_out_oldest_first_and_only_inside_the_window() -> None:
    window = Window(T0 + 2 * HOUR, T0 + 5 * HOUR)
    newest_first = [good(TS + h * 3600) for h in (5, 4, 3, 2, 1, 0)]  # one after the window, two before it
    result = validate_window("BTC-USD", window, newest_first)
    assert [c.bucket_start for c in result.candles] == [T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 4 * HOUR]
    assert result.outside == 3 and not result.rejects and result.received == 3


def test_a_repeated_hour_collapses_when_identical_and_is_rejected_when_copies_disagree() -> None:
    window = Window(T0, T0 + 2 * HOUR)
    conflicting = good(TS + 3600)
    conflicting[4] = D("100.75")
    result = validate_window("BTC-USD", window, [good(TS), good(TS), good(TS + 3600), conflicting])
    assert [c.bucket_start for c in result.candles] == [T0]
    assert result.duplicates == 1
    assert {r.reason for r in result.rejects} == {"2 conflicting candles for the same hour"}
    assert {r.bucket_start for r in result.rejects} == {T0 + HOUR} and len(result.rejects) == 2


def test_a_bad_candle_outside_the_window_is_not_ours_to_reject() -> None:
    bad_before = [TS - 3600, 5, 1, 1, 1, 1]  # high < low, but before the window
    result = validate_window("BTC-USD", Window(T0, T0 + HOUR), [good(), bad_before])
    assert len(result.candles) == 1 and not result.rejects and result.outside == 1


def test_jsonnum_round_trips_decimals_exactly() -> None:
    text = "[[1704067200,46300.0,47243.18,46727.89,47022.75,870.20141999]]"
    assert jsonnum.dumps(jsonnum.loads(text)) == text
