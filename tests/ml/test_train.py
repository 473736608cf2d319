"""Time-ordered splits, the purge, determinism and no leakage, on synthetic feature frames."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ml.features import TARGET_COLUMN
from ml.train import TrainConfig, TrainingError, fit_lightgbm, time_split, train_candidates
from tests.ml.conftest import small_config
from tests.ml.synthetic import features_from_candles, random_walk_candles

CUTOFF = datetime(2022, 2, 20, 0)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return features_from_candles(random_walk_candles(24 * 70))  # 2022-01-01 .. 2022-03-11


def test_split_boundaries_and_purge(frame: pd.DataFrame) -> None:
    config = small_config(validation_hours=100, purge_hours=24)
    split = time_split(frame, CUTOFF, config)
    one_h = pd.Timedelta(hours=1)
    # every target realized before the cutoff; validation = the last 100 such hours, in time order
    assert split.valid["hour"].max() + one_h < pd.Timestamp(CUTOFF)
    assert split.valid["hour"].max() == pd.Timestamp(CUTOFF) - 2 * one_h
    assert len(split.valid) == 100
    assert split.valid["hour"].is_monotonic_increasing and split.train["hour"].is_monotonic_increasing
    # the purge: the last training target hour is at least 24 h before the first validation hour
    last_train_target = split.train["hour"].max() + one_h
    assert split.valid["hour"].min() - last_train_target == pd.Timedelta(hours=24)
    # nothing shuffled or dropped inside the training range beyond the incomplete warm-up rows
    expected = frame.loc[frame["is_forecastable"] & (frame["hour"] <= split.train["hour"].max()), "hour"]
    assert list(split.train["hour"]) == list(expected)


def test_only_forecastable_rows_with_a_target_are_used(frame: pd.DataFrame) -> None:
    broken = frame.copy()
    hole = broken["hour"] == pd.Timestamp("2022-02-01 05:00")
    broken.loc[hole, "is_forecastable"] = False
    broken.loc[broken["hour"] == pd.Timestamp("2022-02-01 06:00"), TARGET_COLUMN] = np.nan
    split = time_split(broken, CUTOFF, small_config())
    used = set(split.train["hour"]) | set(split.valid["hour"])
    assert pd.Timestamp("2022-02-01 05:00") not in used and pd.Timestamp("2022-02-01 06:00") not in used
    assert split.train["is_forecastable"].all() and split.train[TARGET_COLUMN].notna().all()


def test_purge_below_24_hours_is_refused() -> None:
    with pytest.raises(ValueError, match="purge_hours"):
        TrainConfig(purge_hours=12)


def test_same_data_gives_the_same_model(frame: pd.DataFrame) -> None:
    split = time_split(frame, CUTOFF, small_config())
    a, _ = fit_lightgbm(split, small_config())
    b, _ = fit_lightgbm(split, small_config())
    assert a.files() == b.files()


def test_rows_after_the_cutoff_cannot_change_the_model(frame: pd.DataFrame) -> None:
    config = small_config()
    before = train_candidates(frame, "BTC-USD", CUTOFF, config, trained_at=CUTOFF)
    # Rewrite everything whose target is not realized before the cutoff: the row of cutoff - 1h (its
    # target is the cutoff hour's close) and every later row, features and targets alike.
    tampered = frame.copy()
    after = tampered["hour"] >= pd.Timestamp(CUTOFF - timedelta(hours=1))
    flags = ("product_id", "hour", "is_complete", "is_forecastable", "is_missing_hour")
    numeric = [c for c in tampered.columns if c not in flags]
    rng = np.random.default_rng(1)
    tampered.loc[after, numeric] = rng.normal(size=(int(after.sum()), len(numeric)))
    later = train_candidates(tampered, "BTC-USD", CUTOFF, config, trained_at=CUTOFF)
    assert [c.forecaster.files() for c in before] == [c.forecaster.files() for c in later]
    # The comparison can fail: the same tampering one hour *inside* the training data changes the model.
    inside = frame.copy()
    row = inside["hour"] == pd.Timestamp("2022-01-25 10:00")
    inside.loc[row, TARGET_COLUMN] = 0.5
    changed = train_candidates(inside, "BTC-USD", CUTOFF, config, trained_at=CUTOFF)
    assert changed[0].forecaster.files() != before[0].forecaster.files()


def test_candidates_carry_metadata_and_baselines(frame: pd.DataFrame) -> None:
    cands = train_candidates(frame, "BTC-USD", CUTOFF, small_config(), trained_at=CUTOFF)
    kinds = [c.forecaster.kind for c in cands]
    assert kinds == ["lightgbm", "naive_persistence", "naive_drift"]
    meta = cands[0].metadata
    assert meta["training_cutoff"] == CUTOFF and meta["row_count"]["valid"] == 24 * 7
    assert meta["training_window"]["valid_last_hour"] < CUTOFF
    assert set(meta["validation_metrics"]) >= {"mae", "rmse", "mape", "skill", "coverage_80", "pinball_10"}
    persistence = cands[1].metadata["validation_metrics"]
    assert persistence["skill"] == 0.0 and persistence["mae"] == persistence["persistence_mae"]


def test_too_little_history_names_product_and_cutoff(frame: pd.DataFrame) -> None:
    with pytest.raises(TrainingError, match=r"BTC-USD: not enough .* cutoff 2022-01-12"):
        train_candidates(frame, "BTC-USD", datetime(2022, 1, 12), small_config())
