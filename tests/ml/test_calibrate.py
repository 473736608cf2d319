"""The interval recalibration (``ml.calibrate``): no lookahead, and weekly coverage that holds where the raw
quantiles do not, on a synthetic series whose volatility changes from week to week."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.calibrate import Recalibration, recalibrate
from ml.metrics import coverage

HOURS = 24 * 7 * 20


def _series(seed: int = 3) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Hourly log returns whose volatility drifts between regimes (GARCH-like clustering plus weekly shifts)."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2023-01-02", periods=HOURS, freq="h")
    weekly = np.exp(rng.normal(0.0, 0.45, HOURS // 168 + 1)).repeat(168)[:HOURS]
    daily = np.exp(0.3 * np.sin(np.arange(HOURS) * 2 * np.pi / 24))
    return hours, rng.standard_t(5, HOURS) * 0.004 * weekly * daily


def _weekly_coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    weeks = np.arange(y.size) // 168
    return np.array([coverage(y[weeks == w], lo[weeks == w], hi[weeks == w]) for w in np.unique(weeks)])


def test_an_interval_never_depends_on_its_own_outcome_or_later_ones() -> None:
    hours, y = _series()
    lo, hi = np.full(HOURS, -0.005), np.full(HOURS, 0.005)
    config = Recalibration(window_hours=72, replay_hours=48, gamma=0.05, min_scores=24)
    k = 600
    base = recalibrate(hours, lo, hi, y, config)
    later = y.copy()
    later[k:] = later[k:] * 40 + 0.1  # the outcomes of feature hour k and after
    moved = recalibrate(hours, lo, hi, later, config)
    for a, b in zip(moved, base, strict=True):
        np.testing.assert_array_equal(a[:k + 1], b[:k + 1])  # hour k's own interval included
        assert not np.allclose(a[k + 1:k + 50], b[k + 1:k + 50])  # the next ones do read them
    wider = lo.copy()
    wider[k] = -0.5  # a forecast made later
    moved = recalibrate(hours, wider, hi, y, config)
    np.testing.assert_array_equal(moved[1][:k], base[1][:k])
    # the same hours given out of order (and a row dropped): the same intervals for the rows given
    order = np.random.default_rng(0).permutation(HOURS)[:-1]
    shuffled = recalibrate(hours[order], lo[order], hi[order], y[order], config)
    kept = np.sort(order)
    again = recalibrate(hours[kept], lo[kept], hi[kept], y[kept], config)
    np.testing.assert_array_equal(shuffled[1][np.argsort(order)], again[1])


def test_weekly_coverage_holds_better_than_the_raw_quantiles_on_a_heteroscedastic_series() -> None:
    hours, y = _series()
    # a model's quantiles calibrated on the whole series at once: right on average, wrong in most weeks
    lo, hi = np.full(HOURS, np.quantile(y, 0.1)), np.full(HOURS, np.quantile(y, 0.9))
    new_lo, new_hi = recalibrate(hours, lo, hi, y)
    scored = slice(Recalibration().lookback_hours, None)  # from the first week with a full look-back
    raw = _weekly_coverage(y[scored], lo[scored], hi[scored])
    recal = _weekly_coverage(y[scored], new_lo[scored], new_hi[scored])
    held_raw, held_recal = np.mean((raw >= 0.75) & (raw <= 0.85)), np.mean((recal >= 0.75) & (recal <= 0.85))
    assert held_recal >= held_raw + 0.3, (held_raw, held_recal)
    assert np.mean(np.abs(recal - 0.8)) < 0.5 * np.mean(np.abs(raw - 0.8))
    assert abs(coverage(y[scored], new_lo[scored], new_hi[scored]) - 0.8) < 0.02
