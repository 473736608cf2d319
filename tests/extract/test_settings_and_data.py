"""Settings from env vars, the replay server's CSV checks, and how gaps are described."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from candlecast.settings import ExtractSettings, SettingsError
from extract.pipeline import describe_hours
from tools.replay.data import ReplayDataError, read_csv


def test_defaults_are_the_real_api_btc_usd_and_ten_requests_a_second() -> None:
    settings = ExtractSettings.from_env({})
    assert settings.api_url == "https://api.exchange.coinbase.com"
    assert settings.products == ("BTC-USD",)
    assert (settings.rate_per_second, settings.burst, settings.max_attempts) == (10.0, 10, 5)
    assert (settings.refetch_hours, settings.max_catchup_hours) == (24, 168)  # a day re-fetched, a week caught up


def test_every_setting_comes_from_its_env_var() -> None:
    settings = ExtractSettings.from_env({
        "COINBASE_API_URL": "http://127.0.0.1:8765/",
        "CANDLECAST_EXTRACT_PRODUCTS": "BTC-USD, ETH-USD,,",
        "CANDLECAST_EXTRACT_RATE": "2.5",
        "CANDLECAST_EXTRACT_BURST": "3",
        "CANDLECAST_EXTRACT_MAX_ATTEMPTS": "7",
        "CANDLECAST_EXTRACT_TIMEOUT": "4",
        "CANDLECAST_EXTRACT_BACKOFF_INITIAL": "0.1",
        "CANDLECAST_EXTRACT_BACKOFF_MAX": "9",
        "CANDLECAST_EXTRACT_BATCH_SIZE": "500",
        "CANDLECAST_EXTRACT_USER_AGENT": "me/1.0",
        "CANDLECAST_EXTRACT_REFETCH_HOURS": "6",
        "CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS": "48",
    })
    assert settings == ExtractSettings(
        api_url="http://127.0.0.1:8765", products=("BTC-USD", "ETH-USD"), rate_per_second=2.5, burst=3,
        max_attempts=7, timeout_s=4.0, backoff_initial_s=0.1, backoff_max_s=9.0, batch_size=500, user_agent="me/1.0",
        refetch_hours=6, max_catchup_hours=48,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANDLECAST_EXTRACT_RATE": "fast"}, "CANDLECAST_EXTRACT_RATE must be a float, got 'fast'"),
        ({"CANDLECAST_EXTRACT_BURST": "1.5"}, "CANDLECAST_EXTRACT_BURST must be a int"),
        ({"CANDLECAST_EXTRACT_RATE": "0"}, "rate must be > 0"),
        ({"COINBASE_API_URL": "api.exchange.coinbase.com"}, "COINBASE_API_URL must be an http(s) URL"),
        ({"CANDLECAST_EXTRACT_REFETCH_HOURS": "-1"}, "CANDLECAST_EXTRACT_REFETCH_HOURS must be >= 0, got -1"),
        ({"CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS": "0"}, "CANDLECAST_EXTRACT_MAX_CATCHUP_HOURS must be >= 1"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExtractSettings.from_env(env)


def test_gaps_are_described_as_ranges() -> None:
    hours = [datetime(2023, 3, 4, h, tzinfo=UTC) for h in (17, 18, 19, 20)] + [datetime(2023, 5, 1, 3, tzinfo=UTC)]
    assert describe_hours(hours) == "2023-03-04 17:00..20:00, 2023-05-01 03:00 UTC"
    assert describe_hours([]) == ""


def test_the_replay_server_refuses_a_csv_that_is_not_candles(tmp_path: Path) -> None:
    bad_header = tmp_path / "a.csv"
    bad_header.write_text("time,open,high,low,close,volume\n1,2,3,4,5,6\n")
    with pytest.raises(ReplayDataError, match="header must be time,low,high,open,close,volume"):
        read_csv(bad_header, "X")
    bad_number = tmp_path / "b.csv"
    bad_number.write_text("time,low,high,open,close,volume\n3600,1,2,1,1,1\n7200,1,two,1,1,1\n")
    with pytest.raises(ReplayDataError, match=r"b.csv:3: not a number"):
        read_csv(bad_number, "X")
    conflict = tmp_path / "c.csv"
    conflict.write_text("time,low,high,open,close,volume\n3600,1,2,1,1,1\n3600,1,2,1,1.5,1\n")
    with pytest.raises(ReplayDataError, match="appears twice with different values"):
        read_csv(conflict, "X")


def test_a_plain_csv_is_served_in_time_order_with_identical_repeats_collapsed(tmp_path: Path) -> None:
    path = tmp_path / "eth.csv"
    path.write_text("time,low,high,open,close,volume\n7200,1,2,1,1,1\n3600,1,2,1,1,1\n7200,1.0,2,1,1,1\n")
    series = read_csv(path, "ETH-USD")
    assert series.times == (3600, 7200) and len(series) == 2
