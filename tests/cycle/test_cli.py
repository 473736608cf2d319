"""The cycle command's time rules (no database): one clock reading at the edge, ISO 8601, UTC without offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from candlecast.settings import SettingsError
from cycle.cli import build_parser, cycle_end, cycle_ends
from cycle.context import Interval

NOW = datetime(2024, 1, 8, 13, 5, 42, tzinfo=UTC)


def test_without_end_the_cycle_covers_the_hour_that_closed_last() -> None:
    end = cycle_end(None, NOW)
    assert end == datetime(2024, 1, 8, 13, tzinfo=UTC)
    assert Interval.hour_ending(end) == Interval(datetime(2024, 1, 8, 12, tzinfo=UTC), end)


def test_end_without_offset_is_utc_and_with_an_offset_is_converted() -> None:
    parser = build_parser()
    plain = parser.parse_args(["--end", "2024-01-08T12:00"]).end
    offset = parser.parse_args(["--end", "2024-01-08T13:00+01:00"]).end
    assert cycle_end(plain, NOW) == cycle_end(offset, NOW) == datetime(2024, 1, 8, 12, tzinfo=UTC)
    # Inside an hour it floors: the interval always ends on a whole hour (07:59-05:00 is 12:59 UTC).
    assert cycle_end(datetime(2024, 1, 8, 7, 59, tzinfo=timezone(timedelta(hours=-5))), NOW) == \
        datetime(2024, 1, 8, 12, tzinfo=UTC)


def test_an_end_after_the_current_hour_is_refused() -> None:
    with pytest.raises(SettingsError, match="after the current hour"):
        cycle_end(datetime(2024, 1, 8, 14, tzinfo=UTC), NOW)


def test_a_time_that_is_not_iso_8601_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--end", "8 Jan 2024"])
    assert exit_info.value.code == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err


def test_a_start_runs_every_interval_up_to_the_end_one_hour_at_a_time() -> None:
    ends = cycle_ends(datetime(2024, 1, 8, 9, 30, tzinfo=UTC), datetime(2024, 1, 8, 12, tzinfo=UTC), NOW)
    assert ends == [datetime(2024, 1, 8, h, tzinfo=UTC) for h in (10, 11, 12)]
    assert cycle_ends(None, None, NOW) == [datetime(2024, 1, 8, 13, tzinfo=UTC)]
    with pytest.raises(SettingsError, match="must be before the end"):
        cycle_ends(datetime(2024, 1, 8, 12, tzinfo=UTC), datetime(2024, 1, 8, 12, tzinfo=UTC), NOW)
    with pytest.raises(SettingsError, match="--weekly"):
        cycle_ends(datetime(2024, 1, 1, tzinfo=UTC), None, NOW, weekly=True)
