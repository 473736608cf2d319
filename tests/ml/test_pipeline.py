"""Training, evaluation, promotion and inference against the real MariaDB and the dbt-built feature mart."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from ml.evaluate import EvaluationError, evaluate
from ml.features import TARGET_CLOSE_COLUMN
from ml.model import DRIFT, PERSISTENCE, ConstantForecaster
from ml.predict import ModelCache, PredictionError, StaleFeatures, predict_hour, predict_range
from ml.promote import promote
from ml.store import ModelStore
from ml.train import TrainConfig, fit_lightgbm, time_split, train
from tests.ml.conftest import MlDb, current_lineage, small_config

pytestmark = pytest.mark.integration

PRODUCT = "BTC-USD"
WINDOW_END = datetime(2024, 1, 9, 23)  # the newest hour: every earlier hour has a realized target
CUTOFF = WINDOW_END - timedelta(hours=168)


def _rows(db: MlDb, sql: str, **params: object) -> list[tuple]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql.format(ml=db.schemas.ml)), params).all()]


def _meta(kind: str, cutoff: datetime = CUTOFF) -> dict[str, object]:
    return {"product": PRODUCT, "training_cutoff": cutoff, "trained_at": cutoff, "feature_hash": current_lineage().hash,
            "row_count": {"train": 1, "valid": 1}}


def _holdout(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.loc[(frame["hour"] >= CUTOFF) & (frame["hour"] < WINDOW_END - timedelta(hours=1))]
    return rows.loc[rows["is_forecastable"] & rows[TARGET_CLOSE_COLUMN].notna()]


def test_training_stores_and_registers_lightgbm_and_both_baselines(ml_db: MlDb, clean_ml_tables: None,
                                                                   tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    result = train(ml_db.engine, ml_db.schemas, store, PRODUCT, CUTOFF, small_config(), lineage=current_lineage())
    assert set(result.versions) == {"lightgbm", PERSISTENCE, DRIFT}
    assert sorted(store.versions(PRODUCT)) == sorted(result.versions.values())
    registry = _rows(ml_db, "select model_version, status, training_cutoff from {ml}.model_registry")
    assert sorted(r[0] for r in registry) == sorted(result.versions.values())
    assert {r[1] for r in registry} == {"candidate"} and {r[2] for r in registry} == {CUTOFF}
    meta = store.metadata(result.versions["lightgbm"])
    assert datetime.fromisoformat(meta["training_window"]["valid_last_hour"]) + timedelta(hours=1) < CUTOFF
    # Retraining on the same rows reproduces the same versions: same model text, same checksum.
    again = train(ml_db.engine, ml_db.schemas, store, PRODUCT, CUTOFF, small_config(), lineage=current_lineage())
    assert again.versions == result.versions


def test_promotion_picks_the_true_best_and_skips_a_corrupted_model(ml_db: MlDb, clean_ml_tables: None,
                                                                 bundled_frame: pd.DataFrame, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    holdout = _holdout(bundled_frame)
    early = CUTOFF - timedelta(days=30)
    persistence = store.save(ConstantForecaster(PERSISTENCE, 0.0, -0.005, 0.005), _meta(PERSISTENCE, early))
    drift = store.save(ConstantForecaster(DRIFT, 0.004, -0.005, 0.005), _meta(DRIFT, early))
    # A crafted winner: a LightGBM model fitted on the holdout itself, so it is the best by construction.
    oracle_config = small_config(validation_hours=48, min_train_rows=50, min_data_in_leaf=5, num_boost_round=200,
                                 early_stopping_rounds=200)
    split = time_split(bundled_frame, WINDOW_END, oracle_config)
    oracle, _ = fit_lightgbm(type(split)(split.cutoff, _holdout(split.train), split.valid), oracle_config)
    best = store.save(oracle, _meta("lightgbm"))
    # A challenger whose file is corrupted after saving must be skipped, not scored, not promoted.
    corrupted = store.save(ConstantForecaster(DRIFT, 0.0001, -0.005, 0.005), _meta(DRIFT, early))
    (tmp_path / corrupted / "baseline.json").write_text('{"point_return": 0, "lower_return": 0, "upper_return": 0}')

    report = evaluate(ml_db.engine, ml_db.schemas, store, PRODUCT, WINDOW_END, lineage=current_lineage())
    assert report.window_start == CUTOFF and report.rows == len(holdout)
    # Independent check of the ranking: MAE of each model's prices on the same rows, computed here.
    expected = {}
    for version in (persistence, drift, best):
        fc = store.load(version).forecaster.predict(holdout)
        expected[version] = np.mean(np.abs(holdout[TARGET_CLOSE_COLUMN] - holdout["close"] * np.exp(fc.point)))
    scored = {r.version: r.scores.mae for r in report.scored}  # type: ignore[union-attr]
    assert scored == pytest.approx(expected)
    assert min(expected, key=expected.__getitem__) == best

    decision = promote(ml_db.engine, ml_db.schemas, report)
    assert decision.winner == best and decision.previous is None
    skipped = _rows(ml_db, "select model_version, status, reason from {ml}.model_evaluations where status = 'skipped'")
    assert [(v, s) for v, s, _ in skipped] == [(corrupted, "skipped")]
    assert "checksum of baseline.json" in skipped[0][2]
    status = dict(_rows(ml_db, "select model_version, status from {ml}.model_registry"))
    assert status[best] == "production" and corrupted not in status
    promotions = _rows(ml_db, "select from_version, to_version, window_start, window_end, metrics, reason "
                              "from {ml}.model_promotions")
    assert len(promotions) == 1 and promotions[0][:4] == (None, best, CUTOFF, WINDOW_END)
    assert json.loads(promotions[0][4])["winner"]["version"] == best and "lowest MAE" in promotions[0][5]


def test_persistence_stays_in_production_when_nothing_beats_it(ml_db: MlDb, clean_ml_tables: None,
                                                               tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    persistence = store.save(ConstantForecaster(PERSISTENCE, 0.0, -0.005, 0.005), _meta(PERSISTENCE))
    store.save(ConstantForecaster(DRIFT, 0.002, -0.005, 0.005), _meta(DRIFT))
    store.save(ConstantForecaster(DRIFT, -0.002, -0.005, 0.005), _meta(DRIFT))
    report = evaluate(ml_db.engine, ml_db.schemas, store, PRODUCT, WINDOW_END, lineage=current_lineage())
    assert len(report.scored) == 3
    assert promote(ml_db.engine, ml_db.schemas, report).winner == persistence
    # Promoting again on the same evidence changes nothing and records no new promotion.
    again = promote(ml_db.engine, ml_db.schemas, report)
    assert not again.changed
    assert _rows(ml_db, "select count(*) from {ml}.model_promotions") == [(1,)]


def test_evaluation_needs_a_holdout_after_the_newest_cutoff(ml_db: MlDb, clean_ml_tables: None,
                                                           tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save(ConstantForecaster(PERSISTENCE, 0.0, -0.005, 0.005), _meta(PERSISTENCE, WINDOW_END))
    with pytest.raises(EvaluationError, match=r"BTC-USD: holdout window 2024-01-09 23:00 .* has 0 forecastable hours"):
        evaluate(ml_db.engine, ml_db.schemas, store, PRODUCT, WINDOW_END, lineage=current_lineage())


@pytest.fixture()
def production_store(ml_db: MlDb, clean_ml_tables: None, tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path)
    train(ml_db.engine, ml_db.schemas, store, PRODUCT, CUTOFF, small_config(), lineage=current_lineage())
    promote(ml_db.engine, ml_db.schemas,
            evaluate(ml_db.engine, ml_db.schemas, store, PRODUCT, WINDOW_END, lineage=current_lineage()))
    return store


def test_inference_is_idempotent(ml_db: MlDb, production_store: ModelStore) -> None:
    hour = datetime(2024, 1, 9, 22)
    cache = ModelCache()
    first = predict_hour(ml_db.engine, ml_db.schemas, production_store, PRODUCT, hour, cache, lineage=current_lineage())
    table = "select * from {ml}.predictions order by target_hour, model_version"
    before = _rows(ml_db, table)
    second = predict_hour(ml_db.engine, ml_db.schemas, production_store, PRODUCT, hour, cache,
                          lineage=current_lineage())
    assert first == second and _rows(ml_db, table) == before  # created_at and updated_at included
    served = _rows(ml_db, "select product_id, target_hour, model_version, predicted_close, lower_80, upper_80, "
                          "feature_hour from {ml}.predictions where role = 'production'")
    assert len(served) == 1 and len(before) == 3  # the two other models forecast the hour in its shadow
    product, target_hour, version, predicted, lower, upper, feature_hour = served[0]
    assert (product, target_hour, feature_hour) == (PRODUCT, datetime(2024, 1, 9, 23), hour)
    assert lower <= upper and float(predicted) == pytest.approx(first.predicted_close)
    # The prediction is close × exp(predicted return) of that hour's row.
    close = _rows(ml_db, f"select close from {ml_db.schemas.marts}.fct_candle_features where hour = :h", h=hour)
    model = production_store.load(version)
    assert model.kind in {"lightgbm", PERSISTENCE, DRIFT}
    assert 0.9 < float(predicted) / float(close[0][0]) < 1.1


def test_the_served_interval_is_recalibrated_on_earlier_realized_hours_only(ml_db: MlDb,
                                                                          production_store: ModelStore) -> None:
    from ml.calibrate import Recalibration, recalibrated_forecast
    from ml.features import TARGET_COLUMN, read_features
    from ml.registry import production_version

    hour = datetime(2024, 1, 9, 20)  # the mart holds the hours after it: a backfill must not read them
    served = predict_hour(ml_db.engine, ml_db.schemas, production_store, PRODUCT, hour, lineage=current_lineage())
    model = production_store.load(production_version(ml_db.engine, ml_db.schemas, PRODUCT) or "")
    frame = read_features(ml_db.engine, ml_db.schemas, PRODUCT,
                          start=hour - timedelta(hours=Recalibration().lookback_hours), end=hour + timedelta(hours=1))
    row = frame.loc[frame["hour"] == hour].reset_index(drop=True)
    row[TARGET_COLUMN] = np.nan  # as the live hourly step sees it: its own outcome not realized yet
    expected = recalibrated_forecast(model.forecaster, frame.loc[frame["hour"] < hour], row)
    close = float(row["close"].iloc[0])
    assert (served.lower_80, served.upper_80) == pytest.approx(
        (close * np.exp(expected.lower[0]), close * np.exp(expected.upper[0])), rel=1e-12)
    raw = model.forecaster.predict(row)
    assert served.upper_80 - served.lower_80 != pytest.approx(close * (np.exp(raw.upper[0]) - np.exp(raw.lower[0])))
    # a day's backfill ending at it serves the hour the same interval
    day = predict_range(ml_db.engine, ml_db.schemas, production_store, PRODUCT, hour - timedelta(hours=23),
                        hour + timedelta(hours=1), lineage=current_lineage())
    assert day[-1] == served


def test_backfill_over_a_range_writes_every_hour_once(ml_db: MlDb, production_store: ModelStore) -> None:
    start, end = datetime(2024, 1, 7, 0), datetime(2024, 1, 9, 0)
    out = predict_range(ml_db.engine, ml_db.schemas, production_store, PRODUCT, start, end, lineage=current_lineage())
    assert [p.feature_hour for p in out] == [start + timedelta(hours=i) for i in range(48)]
    predict_range(ml_db.engine, ml_db.schemas, production_store, PRODUCT, start, end, lineage=current_lineage())
    assert _rows(ml_db, "select count(*), min(target_hour), max(target_hour) from {ml}.predictions "
                        "where role = 'production'") == [(48, start + timedelta(hours=1), end)]


@pytest.mark.parametrize(("hour", "message"), [
    (datetime(2024, 1, 10, 5), "no feature row for 2024-01-10 05:00 UTC"),
    (datetime(2023, 3, 4, 18), "feature row not forecastable .* for 2023-03-04 18:00 UTC"),  # a missing hour
    (datetime(2021, 12, 15, 0), "feature row not forecastable .* for 2021-12-15 00:00 UTC"),  # not 168 h of history yet
])
def test_strict_inference_refuses_missing_or_unforecastable_rows_and_writes_nothing(
        ml_db: MlDb, production_store: ModelStore, hour: datetime, message: str) -> None:
    with pytest.raises(StaleFeatures, match=f"BTC-USD: {message}"):
        predict_hour(ml_db.engine, ml_db.schemas, production_store, PRODUCT, hour, lineage=current_lineage())
    # A backfill that includes one bad hour writes none of the good ones either.
    with pytest.raises(StaleFeatures):
        predict_range(ml_db.engine, ml_db.schemas, production_store, PRODUCT,
                      hour - timedelta(hours=3), hour + timedelta(hours=1), lineage=current_lineage())
    assert _rows(ml_db, "select count(*) from {ml}.predictions") == [(0,)]


def test_inference_without_a_production_model_says_so(ml_db: MlDb, clean_ml_tables: None, tmp_path: Path) -> None:
    with pytest.raises(PredictionError, match="BTC-USD: no production model"):
        predict_hour(ml_db.engine, ml_db.schemas, ModelStore(tmp_path), PRODUCT,
                     datetime(2024, 1, 9, 22), lineage=current_lineage())


def test_default_training_config_is_valid() -> None:
    assert TrainConfig().purge_hours >= 24
