"""Forecasts through gaps, on the bundled data: the hourly step (``ml.predict.forecast_hour``) forecasts with the
production model every hour whose just-closed candle exists, the 2023-03-04 gap included; a missing just-closed
hour gets a labelled fallback, kept apart in the accuracy marts; once the candle arrives, a re-run replaces the
fallback with the model's forecast, and a second re-run changes nothing.

Base ``ct_ml_gaps`` (its own: the scenario adds a candle). One scenario, run once; the tests read its results.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from candlecast.hours import HOUR
from ml.predict import (
    CANDLE_MISSING,
    FALLBACK,
    MODEL,
    NO_FORECAST,
    NO_HISTORY,
    WARM_UP,
    ForecastOutcome,
    Prediction,
    forecast_hour,
    forecast_hours,
    predict_range,
)
from tests.ml.conftest import current_lineage, fast_load_raw, run_dbt, small_config

pytestmark = pytest.mark.integration

BASE = "ct_ml_gaps"
PRODUCT = "BTC-USD"
GAP = [datetime(2023, 3, 4, h) for h in (17, 18, 19, 20)]  # the 4 hours Coinbase left out
# The 168 hours after the gap that used to be refused (a window held a missing hour) until 2023-03-11 21:00.
BLACKOUT = (datetime(2023, 3, 4, 21), datetime(2023, 3, 11, 21))
NEWEST = datetime(2024, 1, 9, 23)
ARRIVING = NEWEST + HOUR  # the just-closed hour whose candle is missing at first, then arrives
WARM_UP_HOUR = datetime(2021, 12, 14, 5)  # the bundled data start at 2021-12-14 00:00

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Scenario:
    production: str
    closes: dict[datetime, Decimal]
    around_gap: list[ForecastOutcome]  # the hourly step for each hour 2023-03-04 14:00 .. 2023-03-05 02:00
    blackout: list[Prediction]  # predict_range over BLACKOUT, strict: raises if any hour is refused
    warm_up: ForecastOutcome  # an hour in the product's first 168 h
    unknown_product: ForecastOutcome  # a product with no candle at all
    missing: ForecastOutcome  # forecast_hour(ARRIVING) before its candle exists
    missing_rows: Rows  # forecast_outcomes after it, and after a re-run while the candle is still missing
    missing_again_rows: Rows
    healed: ForecastOutcome  # forecast_hour(ARRIVING) after the candle arrived and dbt ran
    healed_tables: tuple[Rows, Rows]  # forecast_outcomes, predictions
    again_tables: tuple[Rows, Rows]  # the same after one more re-run
    marts: dict[str, Rows]


def _rows(engine, sql: str, **params: object) -> Rows:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]


@pytest.fixture(scope="module")
def scenario(mariadb: dict[str, str], provision_schemas, admin_engine, tmp_path_factory) -> Iterator[Scenario]:
    from candlecast.db import engine_for
    from ml.registry import switch_production
    from ml.store import ModelStore
    from ml.train import train
    from tests.support import Candle, load_raw_candles

    schemas = provision_schemas(BASE)
    loader, engine = engine_for("loader"), engine_for("ml")
    try:
        fast_load_raw(loader, schemas)
        run_dbt("run", "+fct_candle_features", BASE, "--full-refresh")
        lineage = current_lineage()
        with admin_engine.begin() as conn:
            for table in ("forecast_skips", "forecast_outcomes", "predictions", "model_promotions",
                          "model_evaluations", "model_registry"):
                conn.execute(text(f"drop table if exists `{schemas.ml}`.{table}"))
            for table in ("fct_prediction_accuracy", "fct_model_accuracy_monthly", "fct_forecast_outcomes"):
                conn.execute(text(f"drop table if exists `{schemas.marts}`.{table}"))  # incremental: start afresh
        # LightGBM trained after the gap (its rows with NULL features among the training rows), made production
        store = ModelStore(tmp_path_factory.mktemp("gap-models"))
        cutoff = datetime(2023, 6, 1)
        production = train(engine, schemas, store, PRODUCT, cutoff, small_config(),
                           lineage=lineage).versions["lightgbm"]
        switch_production(engine, schemas, PRODUCT, production, (cutoff, cutoff), {}, "test: LightGBM serves")
        closes = {r["hour"]: r["close"] for r in _rows(
            engine, f"select hour, close from {schemas.marts}.fct_candle_features "
                    "where hour between '2023-03-04 12:00' and '2023-03-11 21:00' or hour >= '2024-01-09 20:00'")}

        around_gap = forecast_hours(engine, schemas, store, PRODUCT, datetime(2023, 3, 4, 14), datetime(2023, 3, 5, 3),
                                    lineage=lineage)
        blackout = predict_range(engine, schemas, store, PRODUCT, *BLACKOUT, lineage=lineage)
        warm_up = forecast_hour(engine, schemas, store, PRODUCT, WARM_UP_HOUR, lineage=lineage)
        unknown_product = forecast_hour(engine, schemas, store, "ETH-USD", ARRIVING, lineage=lineage)

        outcomes_sql = f"select * from {schemas.ml}.forecast_outcomes order by product_id, target_hour"
        predictions_sql = f"select * from {schemas.ml}.predictions order by product_id, target_hour, model_version"
        missing = forecast_hour(engine, schemas, store, PRODUCT, ARRIVING, lineage=lineage)
        missing_rows = _rows(engine, outcomes_sql)
        forecast_hour(engine, schemas, store, PRODUCT, ARRIVING, lineage=lineage)
        missing_again_rows = _rows(engine, outcomes_sql)

        # the candle arrives (the extractor's next run), and the hourly dbt run builds its features
        last = closes[NEWEST]
        arrived = last * Decimal("1.001")
        load_raw_candles(loader, schemas, [Candle(int((ARRIVING - datetime(1970, 1, 1)).total_seconds()),
                                                  min(last, arrived), max(last, arrived), last, arrived,
                                                  Decimal("12.5"))])
        run_dbt("run", "+fct_candle_features", BASE)
        healed = forecast_hour(engine, schemas, store, PRODUCT, ARRIVING, lineage=lineage)
        healed_tables = (_rows(engine, outcomes_sql), _rows(engine, predictions_sql))
        forecast_hour(engine, schemas, store, PRODUCT, ARRIVING, lineage=lineage)
        again_tables = (_rows(engine, outcomes_sql), _rows(engine, predictions_sql))

        run_dbt("build", "tag:accuracy", BASE)
        marts = {name: _rows(admin_engine, f"select * from {schemas.marts}.{name}")
                 for name in ("fct_prediction_accuracy", "fct_forecast_outcomes")}
        marts["model_leaderboard"] = _rows(admin_engine, f"select model_version, n_realized, mae_all "
                                                         f"from {schemas.marts}.model_leaderboard")
        yield Scenario(production, closes, around_gap, blackout, warm_up, unknown_product, missing, missing_rows,
                       missing_again_rows, healed, healed_tables, again_tables, marts)
    finally:
        loader.dispose()
        engine.dispose()


def test_hours_after_the_gap_are_forecast_by_the_production_model(scenario: Scenario) -> None:
    by_hour = {o.feature_hour: o for o in scenario.around_gap}
    # every hour with a candle: the production LightGBM model, from the hour's own row
    for hour, outcome in by_hour.items():
        if hour in GAP:
            continue
        assert (outcome.outcome, outcome.model_version, outcome.base_hour) == (MODEL, scenario.production, hour)
        assert outcome.lower_80 is not None and outcome.upper_80 is not None
        assert outcome.lower_80 <= outcome.upper_80
    # the week that used to be refused is forecast in full, every value a plausible price from NULL-holding rows
    assert [p.feature_hour for p in scenario.blackout] == [
        BLACKOUT[0] + i * HOUR for i in range((BLACKOUT[1] - BLACKOUT[0]) // HOUR)]
    assert {p.model_version for p in scenario.blackout} == {scenario.production}
    ratios = np.array([p.predicted_close / float(scenario.closes[p.feature_hour]) for p in scenario.blackout])
    assert np.isfinite(ratios).all() and (np.abs(ratios - 1) < 0.05).all()


def test_a_missing_hour_inside_the_data_gets_a_labelled_fallback(scenario: Scenario) -> None:
    fallbacks = [o for o in scenario.around_gap if o.outcome != MODEL]
    assert [o.feature_hour for o in fallbacks] == GAP
    for o in fallbacks:
        assert (o.outcome, o.reason_code, o.model_version, o.lower_80) == (FALLBACK, CANDLE_MISSING, None, None)
        # persistence from the last real close before the gap, saying so
        assert o.base_hour == datetime(2023, 3, 4, 16)
        assert o.predicted_close == pytest.approx(float(scenario.closes[datetime(2023, 3, 4, 16)]))
        assert "the API left it out" in (o.reason or "") and "2023-03-04 16:00 UTC" in (o.reason or "")


def test_warm_up_hours_get_a_labelled_fallback_and_an_unknown_product_no_forecast(scenario: Scenario) -> None:
    w = scenario.warm_up
    assert (w.outcome, w.reason_code, w.base_hour, w.model_version) == (FALLBACK, WARM_UP, WARM_UP_HOUR, None)
    assert "168 h of history" in (w.reason or "")
    u = scenario.unknown_product
    assert (u.outcome, u.reason_code, u.predicted_close) == (NO_FORECAST, NO_HISTORY, None)
    assert "no candle of ETH-USD" in (u.reason or "") and "NO FORECAST" in u.summary()


def test_a_missing_just_closed_hour_yields_a_labelled_fallback_outcome(scenario: Scenario) -> None:
    o = scenario.missing
    assert (o.outcome, o.reason_code, o.feature_hour, o.target_hour) == (FALLBACK, CANDLE_MISSING, ARRIVING,
                                                                          ARRIVING + HOUR)
    assert o.base_hour == NEWEST and o.predicted_close == pytest.approx(float(scenario.closes[NEWEST]))
    assert "newest stored hour 2024-01-09 23:00 UTC" in (o.reason or "")
    assert "FALLBACK" in o.summary()
    recorded = [r for r in scenario.missing_rows if (r["product_id"], r["target_hour"]) == (PRODUCT, ARRIVING + HOUR)]
    assert len(recorded) == 1 and recorded[0]["outcome"] == FALLBACK and recorded[0]["replaced_outcome"] is None
    assert recorded[0]["lower_80"] is None and recorded[0]["reason"] == o.reason
    # a re-run while the candle is still missing changes nothing, timestamps included
    assert scenario.missing_again_rows == scenario.missing_rows


def test_rerun_after_the_candle_arrives_replaces_the_fallback_and_a_second_rerun_changes_nothing(
        scenario: Scenario) -> None:
    healed = scenario.healed
    assert (healed.outcome, healed.model_version, healed.base_hour) == (MODEL, scenario.production, ARRIVING)
    outcomes, predictions = scenario.healed_tables
    key = (PRODUCT, ARRIVING + HOUR)
    row = next(r for r in outcomes if (r["product_id"], r["target_hour"]) == key)
    before = next(r for r in scenario.missing_rows if (r["product_id"], r["target_hour"]) == key)
    assert (row["outcome"], row["model_version"], row["reason_code"], row["reason"], row["replaced_outcome"]) == (
        MODEL, scenario.production, None, None, FALLBACK)
    assert row["created_at"] == before["created_at"] and row["updated_at"] > before["updated_at"]
    hour_rows = [r for r in predictions if r["target_hour"] == ARRIVING + HOUR]
    assert [r["model_version"] for r in hour_rows if r["role"] == "production"] == [scenario.production]
    assert len([r for r in hour_rows if r["role"] == "shadow"]) == 2  # the two baselines, in its shadow
    assert scenario.again_tables == scenario.healed_tables


def test_accuracy_marts_keep_fallbacks_apart(scenario: Scenario) -> None:
    fallback_targets = {h + HOUR for h in GAP}
    every = scenario.marts["fct_prediction_accuracy"]
    accuracy = [r for r in every if r["role"] == "production"]
    # model accuracy: model forecasts only (served and shadow), the gap's fallbacks nowhere
    assert {r["model_version"] for r in accuracy} == {scenario.production}
    assert not fallback_targets & {r["target_hour"] for r in every}
    assert {r["target_hour"] for r in every if r["role"] == "shadow"} == {r["target_hour"] for r in accuracy}
    by_product = {(r["product_id"], r["target_hour"]): r for r in scenario.marts["fct_forecast_outcomes"]}
    assert by_product[("ETH-USD", ARRIVING + HOUR)]["outcome"] == NO_FORECAST
    assert by_product[(PRODUCT, WARM_UP_HOUR + HOUR)]["reason_code"] == WARM_UP
    outcomes = {t: r for (p, t), r in by_product.items() if p == PRODUCT and t != WARM_UP_HOUR + HOUR}
    fallbacks = {t: r for t, r in outcomes.items() if r["outcome"] != MODEL}
    assert set(fallbacks) == fallback_targets
    assert {(r["outcome"], r["is_model_forecast"], r["reason_code"]) for r in fallbacks.values()} == {
        (FALLBACK, 0, CANDLE_MISSING)}
    # the one realized fallback (target 21:00, the first real hour after the gap) is scored here, apart
    realized = [r for r in fallbacks.values() if r["is_realized"]]
    assert [r["target_hour"] for r in realized] == [datetime(2023, 3, 4, 21)]
    assert realized[0]["horizon_hours"] == 5  # persistence from the 16:00 close
    expected = abs(scenario.closes[datetime(2023, 3, 4, 16)] - scenario.closes[datetime(2023, 3, 4, 21)])
    assert float(realized[0]["abs_error"]) == pytest.approx(float(expected))
    healed = outcomes[ARRIVING + HOUR]
    assert (healed["outcome"], healed["is_model_forecast"], healed["replaced_outcome"]) == (MODEL, 1, FALLBACK)
    # the leaderboard counts exactly the model's realized forecasts
    realized_model = [float(r["abs_error"]) for r in accuracy if r["is_realized"] == 1]
    # the blackout's 168, and 14:00 and 15:00 before the gap (16:00's target is a missing hour, 21:00 on are in
    # the blackout, the arriving hour's target has not closed)
    assert len(realized_model) == len(scenario.blackout) + 2
    board = scenario.marts["model_leaderboard"]
    assert sorted((r["model_version"], r["n_realized"]) for r in board) == sorted(
        (r["model_version"], len(realized_model)) for r in every if r["target_hour"] == ARRIVING + HOUR)
    served = next(r for r in board if r["model_version"] == scenario.production)
    assert float(served["mae_all"]) == pytest.approx(float(np.mean(realized_model)))
