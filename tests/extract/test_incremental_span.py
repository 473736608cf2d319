"""Which hours an incremental run fetches: catch-up from the newest stored hour plus the trailing re-fetch day."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from candlecast.hours import HOUR
from candlecast.settings import ExtractSettings
from extract.errors import NothingToResume, TooFarBehind
from extract.pipeline import incremental_span
from extract.windows import Window

END = datetime(2024, 1, 9, 13, tzinfo=UTC)
FIRST = datetime(2023, 1, 1, tzinfo=UTC)
DEFAULTS = ExtractSettings()


def span(first: datetime | None, last: datetime | None, end: datetime = END, **changes: object) -> Window:
    return incremental_span("BTC-USD", (first, last), end, DEFAULTS.with_(**changes))


def test_a_caught_up_product_re_fetches_the_trailing_day() -> None:
    assert span(FIRST, END - HOUR) == Window(END - 24 * HOUR, END)
    assert span(FIRST, END - HOUR, refetch_hours=0) == Window(END, END)


def test_hours_missing_after_the_newest_stored_one_are_all_fetched_up_to_the_bound() -> None:
    assert span(FIRST, END - 31 * HOUR) == Window(END - 30 * HOUR, END)
    assert span(FIRST, END - 169 * HOUR) == Window(END - 168 * HOUR, END)
    with pytest.raises(TooFarBehind) as caught:
        span(FIRST, END - 170 * HOUR)
    assert caught.value.missing == Window(END - 169 * HOUR, END)
    assert "--start 2024-01-02T12:00 --end 2024-01-09T13:00" in str(caught.value)


def test_the_re_fetch_never_reaches_before_the_first_stored_hour() -> None:
    assert span(END - 5 * HOUR, END - HOUR) == Window(END - 5 * HOUR, END)
    assert span(END + 5 * HOUR, END + 9 * HOUR) == Window(END, END)  # an interval before all stored history


def test_re_running_an_old_interval_re_fetches_its_trailing_day() -> None:
    assert span(FIRST, END + 500 * HOUR) == Window(END - 24 * HOUR, END)


def test_naive_stored_hours_from_the_database_are_read_as_utc() -> None:
    assert span(FIRST.replace(tzinfo=None), (END - HOUR).replace(tzinfo=None)) == Window(END - 24 * HOUR, END)


def test_a_product_with_nothing_stored_starts_at_the_initial_start_or_is_told_to_backfill() -> None:
    assert incremental_span("ETH-USD", (None, None), END, DEFAULTS, FIRST) == Window(FIRST, END)
    with pytest.raises(NothingToResume) as caught:
        span(None, None)
    assert str(caught.value) == (
        "BTC-USD: no candles stored yet; run a backfill first (the features need at least 8 days), e.g. "
        "`python -m extract backfill --product BTC-USD --start 2023-01-09T13:00 --end 2024-01-09T13:00`, "
        "or give an initial start (--initial-start)"
    )
