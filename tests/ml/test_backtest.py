"""Walk-forward backtest on a synthetic history: weekly retrains, every usable hour forecast once, outputs written."""

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.backtest import walk_forward, write_outputs
from ml.features import usable_rows
from tests.ml.conftest import small_config
from tests.ml.synthetic import features_from_candles, random_walk_candles


def test_walk_forward_forecasts_every_usable_hour_once_and_draws_the_chart(tmp_path: Path) -> None:
    frame = features_from_candles(random_walk_candles(24 * 60))
    start, end = datetime(2022, 2, 10), datetime(2022, 2, 24)
    weeks_seen: list[tuple[int, int]] = []
    result = walk_forward(frame, "BTC-USD", start, end, small_config(), progress=lambda i, n: weeks_seen.append((i, n)))
    expected = usable_rows(frame)
    expected = expected.loc[(expected["hour"] >= pd.Timestamp(start)) & (expected["hour"] < pd.Timestamp(end))]
    assert list(result.hourly["hour"]) == list(expected["hour"])
    assert weeks_seen == [(1, 2), (2, 2)]
    assert sorted(result.weekly["week_start"].unique()) == [pd.Timestamp(start), pd.Timestamp(2022, 2, 17)]
    assert result.overall["naive_persistence"].skill == 0.0
    assert result.overall["lightgbm"].n == len(expected)
    assert set(result.overall) == {"lightgbm", "lightgbm_raw", "naive_persistence", "naive_persistence_raw",
                                   "naive_drift", "rolling_vol"}
    # the volatility baseline: persistence with close × exp(±1.2816 σ), σ the std of the 24 returns up to the hour
    row = result.hourly.iloc[100]
    returns = np.diff(np.log(frame.set_index("hour")["close"].loc[:row["hour"]].to_numpy()))[-24:]
    sigma = np.std(returns, ddof=1)
    assert (row["rolling_vol_lower"], row["rolling_vol_predicted"], row["rolling_vol_upper"]) == pytest.approx(
        (row["close"] * np.exp(-1.2815516 * sigma), row["close"], row["close"] * np.exp(1.2815516 * sigma)))
    out = write_outputs(result, tmp_path)
    assert out.chart is not None and out.chart.stat().st_size > 10_000
    assert out.chart.with_suffix(".json").exists()
    assert str(out.chart) in out.summary()


def test_gap_affected_hours_are_forecast_and_scored_apart() -> None:
    import numpy as np

    from ml.backtest import CLEAN, GAP_AFFECTED

    frame = features_from_candles(random_walk_candles(24 * 60))
    # as after a missing hour: the windows holding it NULL, is_complete 0, the hour still forecastable
    affected = (frame["hour"] >= pd.Timestamp(2022, 2, 18)) & (frame["hour"] < pd.Timestamp(2022, 2, 19, 6))
    frame.loc[affected, ["return_std_24h", "realized_vol_168h", "log_return_1h_lag_3"]] = np.nan
    frame.loc[affected, "is_complete"] = False
    result = walk_forward(frame, "BTC-USD", datetime(2022, 2, 10), datetime(2022, 2, 24), small_config())
    assert int(result.hourly["is_gap_affected"].sum()) == int(affected.sum()) == 30
    assert np.isfinite(result.hourly["lightgbm_predicted"]).all()
    gap, clean = result.by_gap[GAP_AFFECTED]["lightgbm"], result.by_gap[CLEAN]["lightgbm"]
    assert (gap.n, clean.n) == (30, len(result.hourly) - 30)
    assert "gap-affected hours (a missing hour in some window): 30 hours" in result.summary()
