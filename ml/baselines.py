"""The naive forecasts every model must beat; they are stored, registered and scored like any model.

``naive_persistence``: next close = this close (log return 0). ``naive_drift``: next close = this close
× exp(mean 1 h log return of the training window). Both carry the training window's 10th-90th
percentile of 1 h returns as their 80% interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml.features import TARGET_COLUMN
from ml.model import DRIFT, PERSISTENCE, ConstantForecaster

if TYPE_CHECKING:
    import pandas as pd


def _interval(train: pd.DataFrame) -> tuple[float, float]:
    returns = train[TARGET_COLUMN].to_numpy(dtype="float64")
    if returns.size == 0:
        raise ValueError("cannot fit a baseline on an empty training window")
    import numpy as np

    return float(np.quantile(returns, 0.1)), float(np.quantile(returns, 0.9))


def naive_persistence(train: pd.DataFrame) -> ConstantForecaster:
    lower, upper = _interval(train)
    return ConstantForecaster(PERSISTENCE, 0.0, lower, upper)


def naive_drift(train: pd.DataFrame) -> ConstantForecaster:
    lower, upper = _interval(train)
    mean = float(train[TARGET_COLUMN].to_numpy(dtype="float64").mean())
    return ConstantForecaster(DRIFT, mean, lower, upper)
