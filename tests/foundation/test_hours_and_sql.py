"""One time rule for every CLI, one hour floor, one identifier quoting that refuses what it cannot quote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from candlecast.hours import floor_hour, naive_utc, parse_time
from candlecast.settings import SettingsError, db_settings
from candlecast.sql import quote_ident

NINE_PM_UTC = datetime(2024, 1, 9, 21, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["2024-01-09T21:00", "2024-01-09 21:00:00", "2024-01-09T21:00Z",
                                 "2024-01-09T22:00+01:00", "2024-01-09T16:00-05:00", " 2024-01-09T21 "])
def test_a_cli_time_is_iso_8601_and_utc_unless_it_says_otherwise(raw: str) -> None:
    assert parse_time(raw) == NINE_PM_UTC
    assert parse_time(raw).tzinfo is UTC


def test_every_cli_reads_a_time_the_same_way_and_names_the_argument_it_refuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cycle.cli import build_parser as cycle_parser
    from extract.cli import build_parser as extract_parser
    from ml.cli import build_parser as ml_parser

    moment = "2024-01-09T22:00+01:00"
    assert extract_parser().parse_args(["backfill", "--start", moment, "--end", moment]).start == NINE_PM_UTC
    assert cycle_parser().parse_args(["--end", moment]).end == NINE_PM_UTC
    # The ML CLI works in MariaDB's naive UTC hours; the instant is the same.
    assert ml_parser().parse_args(["train", "--cutoff", moment]).cutoff == naive_utc(NINE_PM_UTC)

    for parser, argv in ((extract_parser(), ["backfill", "--start", "yesterday", "--end", moment]),
                         (ml_parser(), ["train", "--cutoff", "9pm"])):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "not an ISO 8601 time" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ml_parser().parse_args(["train", "--cutoff", "2024-01-09T21:30"])
    assert "argument --cutoff: '2024-01-09T21:30' is not on the hour" in capsys.readouterr().err


def test_floor_hour_gives_a_plain_utc_datetime_whatever_it_is_handed() -> None:
    berlin = timezone(timedelta(hours=1))
    assert floor_hour(datetime(2024, 1, 9, 22, 59, 59, 999, tzinfo=berlin)) == NINE_PM_UTC
    assert floor_hour(datetime(2024, 1, 9, 21, 30)) == NINE_PM_UTC  # naive means UTC
    assert type(floor_hour(NINE_PM_UTC)) is datetime


@pytest.mark.parametrize(("name", "problem"), [
    ("", "is empty"), ("a`b", "contains a backtick"), ("x" * 65, "is longer than 64"),
    ("a\nb", "control character"), ("trailing ", "ends with a space"),
])
def test_an_identifier_that_cannot_be_quoted_safely_is_refused(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        quote_ident(name)


def test_identifiers_are_backtick_quoted_and_a_bad_schema_base_fails_at_the_setting() -> None:
    assert quote_ident("candlecast_raw") == "`candlecast_raw`"
    assert quote_ident("over") == "`over`"  # reserved words are why everything is quoted
    env = {"CANDLECAST_CREDENTIALS_FILE": "/nonexistent", "CANDLECAST_LOADER_PASSWORD": "x"}
    with pytest.raises(SettingsError, match="CANDLECAST_DB_SCHEMA: schema base 'a`b' is not a plain identifier"):
        db_settings("loader", {**env, "CANDLECAST_DB_SCHEMA": "a`b"})
