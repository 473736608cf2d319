"""Walk-forward backtest on a synthetic history: weekly retrains, every usable hour forecast once, outputs written."""

from datetime import datetime
from pathlib import Path

import pandas as pd

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
    out = write_outputs(result, tmp_path)
    assert out.chart is not None and out.chart.stat().st_size > 10_000
    assert out.chart.with_suffix(".json").exists()
    assert str(out.chart) in out.summary()
