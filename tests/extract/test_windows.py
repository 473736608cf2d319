"""Window arithmetic: hour alignment, the last closed hour, and at most 300 candles per request."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from extract.windows import (
    HOUR,
    MAX_CANDLES_PER_REQUEST,
    Window,
    ceil_hour,
    clamp_end,
    floor_hour,
    hour_range,
    last_closed_end,
    split_windows,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_floor_and_ceil_align_to_the_utc_hour() -> None:
    moment = datetime(2024, 1, 1, 10, 37, 5, 123, tzinfo=UTC)
    assert floor_hour(moment) == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert ceil_hour(moment) == datetime(2024, 1, 1, 11, tzinfo=UTC)
    assert ceil_hour(T0) == T0 == floor_hour(T0)


def test_other_offsets_are_converted_and_naive_times_are_taken_as_utc() -> None:
    cest = timezone(timedelta(hours=2))
    assert floor_hour(datetime(2024, 6, 1, 12, 30, tzinfo=cest)) == datetime(2024, 6, 1, 10, tzinfo=UTC)
    # India's +05:30 puts the UTC hour boundary on a local half hour
    ist = timezone(timedelta(hours=5, minutes=30))
    assert floor_hour(datetime(2024, 6, 1, 12, 0, tzinfo=ist)) == datetime(2024, 6, 1, 6, tzinfo=UTC)
    assert floor_hour(datetime(2024, 6, 1, 12, 30)) == datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_the_hour_containing_now_is_open_so_it_ends_the_closed_range() -> None:
    assert last_closed_end(datetime(2024, 1, 1, 10, 59, 59, tzinfo=UTC)) == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert last_closed_end(datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC)) == datetime(2024, 1, 1, 10, tzinfo=UTC)


def test_clamp_end_never_reaches_past_the_open_hour() -> None:
    now = datetime(2024, 1, 1, 10, 15, tzinfo=UTC)
    assert clamp_end(datetime(2024, 1, 2, tzinfo=UTC), now) == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert clamp_end(datetime(2024, 1, 1, 8, 45, tzinfo=UTC), now) == datetime(2024, 1, 1, 8, tzinfo=UTC)
    assert clamp_end(datetime(2024, 1, 1, 8, 45, tzinfo=UTC)) == datetime(2024, 1, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hours", "expected_sizes"),
    [
        (0, []),
        (1, [1]),
        (299, [299]),
        (300, [300]),
        (301, [300, 1]),
        (600, [300, 300]),
        (18_168, [300] * 60 + [168]),
    ],
)
def test_split_windows_covers_the_range_exactly_in_windows_of_at_most_300(
    hours: int, expected_sizes: list[int]
) -> None:
    windows = split_windows(Window(T0, T0 + hours * HOUR))
    assert [w.hours for w in windows] == expected_sizes
    assert all(w.hours <= MAX_CANDLES_PER_REQUEST for w in windows)
    # contiguous, no overlap, oldest first
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start
    if windows:
        assert windows[0].start == T0 and windows[-1].end == T0 + hours * HOUR


def test_request_params_name_the_last_bucket_so_the_span_is_legal_either_way() -> None:
    window = Window(T0, T0 + 300 * HOUR)
    params = window.request_params()
    assert params == {"granularity": "3600", "start": "2024-01-01T00:00:00Z", "end": "2024-01-13T11:00:00Z"}
    span_hours = (datetime.fromisoformat(params["end"]) - datetime.fromisoformat(params["start"])) / HOUR
    assert span_hours + 1 == 300  # 300 buckets counted inclusively; 299 granularities apart


def test_hour_range_floors_both_ends_and_refuses_an_inverted_range() -> None:
    span = hour_range(datetime(2024, 1, 1, 0, 30, tzinfo=UTC), datetime(2024, 1, 1, 5, 59, tzinfo=UTC))
    assert (span.start, span.end, span.hours) == (T0, T0 + 5 * HOUR, 5)
    assert [h.hour for h in span.hour_starts()] == [0, 1, 2, 3, 4]
    assert span.contains(T0) and not span.contains(T0 + 5 * HOUR) and not span.contains(T0 - HOUR)
    with pytest.raises(ValueError, match="before its start"):
        hour_range(T0 + HOUR, T0)


def test_window_rejects_unaligned_or_naive_bounds() -> None:
    with pytest.raises(ValueError, match="hour-aligned"):
        Window(T0 + timedelta(minutes=1), T0 + HOUR)
    with pytest.raises(ValueError, match="hour-aligned"):
        Window(datetime(2024, 1, 1), datetime(2024, 1, 1, 1))
