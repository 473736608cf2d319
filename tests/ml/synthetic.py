"""Feature frames built in pandas, shaped like ``fct_candle_features``, for unit tests without dbt.

The definitions follow the dbt mart's contract closely enough for the ML code (column names, NULL
target on the newest hour, ``is_complete`` and ``is_forecastable`` after 168 h of history); the dbt layer
has its own tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.features import FEATURE_COLUMNS


def random_walk_candles(hours: int, seed: int = 7, start: str = "2022-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.006, hours)
    close = 30000.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[30000.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.003, hours)) * close
    return pd.DataFrame({
        "hour": pd.date_range(start, periods=hours, freq="h"),
        "open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
        "close": close, "volume": rng.gamma(2.0, 50.0, hours),
    })


def features_from_candles(candles: pd.DataFrame, product: str = "BTC-USD") -> pd.DataFrame:
    c = candles.sort_values("hour").reset_index(drop=True)
    out = pd.DataFrame({"product_id": product, "hour": c["hour"], "open": c["open"], "high": c["high"],
                        "low": c["low"], "close": c["close"], "volume": c["volume"]})
    logc = np.log(c["close"])
    r1 = logc.diff()
    for h in (1, 2, 3, 6, 12, 24, 168):
        out[f"log_return_{h}h"] = logc - logc.shift(h)
    for lag in range(1, 25):
        out[f"log_return_1h_lag_{lag}"] = r1.shift(lag)
    for w in (6, 24, 72, 168):
        out[f"return_mean_{w}h"] = r1.rolling(w).mean()
        out[f"return_std_{w}h"] = r1.rolling(w).std()
    out["realized_vol_24h"] = np.sqrt((r1**2).rolling(24).sum())
    out["realized_vol_168h"] = np.sqrt((r1**2).rolling(168).sum())
    rng = c["high"] - c["low"]
    out["hl_range"] = rng / c["close"]
    out["close_position_in_range"] = ((c["close"] - c["low"]) / rng.replace(0, np.nan)).fillna(0.5)
    for w in (24, 168):
        m, s = c["volume"].rolling(w).mean(), c["volume"].rolling(w).std()
        out[f"volume_zscore_{w}h"] = (c["volume"] - m) / s
    out["hour_of_day"] = c["hour"].dt.hour.astype(float)
    out["day_of_week"] = c["hour"].dt.dayofweek.astype(float)
    out["target_close_1h"] = c["close"].shift(-1)
    out["target_log_return_1h"] = logc.shift(-1) - logc
    out["is_missing_hour"] = False
    out["is_complete"] = out[list(FEATURE_COLUMNS)].notna().all(axis=1) & (out.index >= 192)
    out["is_forecastable"] = out["is_complete"]  # no missing hours here: the two rules agree
    return out

