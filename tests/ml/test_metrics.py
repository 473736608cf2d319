import math

import numpy as np
import pytest

from ml import metrics


def test_point_metrics_match_hand_computed_values() -> None:
    actual = [100.0, 110.0, 90.0]
    predicted = [102.0, 105.0, 90.0]
    assert metrics.mae(actual, predicted) == pytest.approx((2 + 5 + 0) / 3)
    assert metrics.rmse(actual, predicted) == pytest.approx(math.sqrt((4 + 25 + 0) / 3))
    assert metrics.mape(actual, predicted) == pytest.approx((2 / 100 + 5 / 110 + 0) / 3 * 100)


def test_direction_accuracy_counts_only_hours_that_moved_and_flat_calls_miss() -> None:
    previous = [100.0, 100.0, 100.0, 100.0]
    actual = [101.0, 99.0, 100.0, 102.0]  # up, down, flat (ignored), up
    predicted = [100.5, 100.5, 90.0, 100.0]  # right, wrong, -, flat call = miss
    assert metrics.direction_accuracy(actual, predicted, previous) == pytest.approx(1 / 3)
    assert metrics.direction_accuracy(actual, previous, previous) == 0.0  # persistence never calls a move
    assert math.isnan(metrics.direction_accuracy([1.0], [2.0], [1.0]))


def test_skill_is_relative_to_persistence() -> None:
    assert metrics.skill(90.0, 100.0) == pytest.approx(0.1)
    assert metrics.skill(100.0, 100.0) == 0.0
    assert metrics.skill(120.0, 100.0) == pytest.approx(-0.2)


def test_coverage_and_pinball() -> None:
    actual = np.array([10.0, 20.0, 30.0, 40.0])
    assert metrics.coverage(actual, [5, 25, 25, 35], [15, 30, 35, 39]) == pytest.approx(0.5)
    # Below the 10% quantile forecast costs 0.9 per unit, above it 0.1 per unit.
    assert metrics.pinball([0.0, 10.0], [5.0, 5.0], 0.1) == pytest.approx((0.9 * 5 + 0.1 * 5) / 2)
    assert metrics.pinball([5.0], [5.0], 0.9) == 0.0


def test_score_of_persistence_has_zero_skill_and_log_return_forecasts_map_to_prices() -> None:
    close = np.array([100.0, 200.0])
    target = np.array([110.0, 190.0])
    s = metrics.score_rows(close, target, np.zeros(2), np.log([0.9, 0.9]), np.log([1.2, 1.2]))
    assert s.mae == pytest.approx(10.0) and s.persistence_mae == pytest.approx(10.0)
    assert s.skill == 0.0 and s.n == 2
    assert s.coverage_80 == 1.0  # [90, 120] holds 110; [180, 240] holds 190
    pred, lo, hi = metrics.to_prices([100.0], [math.log(1.01)], [math.log(0.99)], [math.log(1.02)])
    assert (pred[0], lo[0], hi[0]) == pytest.approx((101.0, 99.0, 102.0))


def test_empty_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        metrics.score([], [], [], [], [])
