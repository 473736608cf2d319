"""Forecast metrics in price terms. Pure functions of arrays, so they are easy to test and reuse.

Every metric compares predicted closes with realized closes of the same hours; ``previous`` is the
close the forecast was made from (which is also what persistence predicts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike


def _arr(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype="float64")


def mae(actual: ArrayLike, predicted: ArrayLike) -> float:
    return float(np.mean(np.abs(_arr(actual) - _arr(predicted))))


def rmse(actual: ArrayLike, predicted: ArrayLike) -> float:
    return float(np.sqrt(np.mean((_arr(actual) - _arr(predicted)) ** 2)))


def mape(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Mean absolute percentage error, in percent."""
    a = _arr(actual)
    return float(np.mean(np.abs((a - _arr(predicted)) / a)) * 100.0)


def direction_accuracy(actual: ArrayLike, predicted: ArrayLike, previous: ArrayLike) -> float:
    """Share of hours that moved in which the forecast called the move's sign.

    Hours with no move are left out; a forecast of no move counts as a miss, so persistence scores 0
    by construction (it never calls a direction). NaN when nothing moved.
    """
    prev = _arr(previous)
    moved = np.sign(_arr(actual) - prev)
    called = np.sign(_arr(predicted) - prev)
    mask = moved != 0
    if not mask.any():
        return float("nan")
    return float(np.mean(called[mask] == moved[mask]))


def skill(model_mae: float, persistence_mae: float) -> float:
    """1 − MAE / MAE_persistence: positive beats persistence, 0 ties, negative is worse."""
    if persistence_mae == 0:
        return float("nan")
    return 1.0 - model_mae / persistence_mae


def coverage(actual: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of realized closes inside [lower, upper]; an honest 80% interval covers about 0.8."""
    a = _arr(actual)
    return float(np.mean((a >= _arr(lower)) & (a <= _arr(upper))))


def pinball(actual: ArrayLike, quantile_forecast: ArrayLike, alpha: float) -> float:
    """Mean pinball (quantile) loss of a forecast of the ``alpha`` quantile."""
    diff = _arr(actual) - _arr(quantile_forecast)
    return float(np.mean(np.maximum(alpha * diff, (alpha - 1.0) * diff)))


@dataclass(frozen=True)
class Scores:
    n: int
    mae: float
    rmse: float
    mape: float
    direction_accuracy: float
    persistence_mae: float
    skill: float
    coverage_80: float
    pinball_10: float
    pinball_90: float
    width_80: float = float("nan")  # mean upper - lower, in price

    @property
    def pinball_mean(self) -> float:
        return (self.pinball_10 + self.pinball_90) / 2.0

    def as_dict(self) -> dict[str, float | None]:
        """The scores for JSON: a metric undefined on the window (NaN) becomes None, i.e. null."""
        d = asdict(self)
        d["pinball_mean"] = self.pinball_mean
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in d.items()}


def score(actual: ArrayLike, predicted: ArrayLike, lower: ArrayLike, upper: ArrayLike,
          previous: ArrayLike) -> Scores:
    """All metrics of one forecast series; ``previous`` gives the persistence forecast for the skill."""
    a = _arr(actual)
    if a.size == 0:
        raise ValueError("cannot score an empty window")
    model_mae = mae(a, predicted)
    persistence_mae = mae(a, previous)
    return Scores(
        n=int(a.size),
        mae=model_mae,
        rmse=rmse(a, predicted),
        mape=mape(a, predicted),
        direction_accuracy=direction_accuracy(a, predicted, previous),
        persistence_mae=persistence_mae,
        skill=skill(model_mae, persistence_mae),
        coverage_80=coverage(a, lower, upper),
        pinball_10=pinball(a, lower, 0.1),
        pinball_90=pinball(a, upper, 0.9),
        width_80=float(np.mean(_arr(upper) - _arr(lower))),
    )


def to_prices(close: ArrayLike, point: ArrayLike, lower: ArrayLike, upper: ArrayLike
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-return forecasts made at ``close`` → predicted close and 80% interval: close × exp(return)."""
    c = _arr(close)
    return c * np.exp(_arr(point)), c * np.exp(_arr(lower)), c * np.exp(_arr(upper))


def score_rows(close: ArrayLike, target_close: ArrayLike, point: ArrayLike, lower: ArrayLike,
               upper: ArrayLike) -> Scores:
    """Score log-return forecasts made at ``close`` against the realized ``target_close``."""
    predicted, lo, hi = to_prices(close, point, lower, upper)
    return score(target_close, predicted, lo, hi, close)
