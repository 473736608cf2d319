"""Promotion on the live record, against the real database: models that forecast in the shadow of production for
two weeks are compared on those realized forecasts (the same hours for all, persistence's error on them too), the
best of them takes production, and the promotions log says the live record decided."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ml.evaluate import evaluate
from ml.live import live_record
from ml.model import DRIFT, PERSISTENCE, ConstantForecaster
from ml.predict import forecast_hours
from ml.promote import LIVE, PromotionRule, promote
from ml.registry import register, switch_production
from ml.store import ModelStore
from tests.ml.conftest import MlDb, current_lineage

pytestmark = pytest.mark.integration

PRODUCT = "BTC-USD"
END = datetime(2024, 1, 9, 23)  # the promotion's window end
CUTOFF = END - timedelta(hours=168)  # every model's training cutoff: the holdout is the last week
LIVE_HOURS = 336


def _meta(cutoff: datetime) -> dict[str, object]:
    return {"product": PRODUCT, "training_cutoff": cutoff, "trained_at": cutoff,
            "feature_hash": current_lineage().hash, "row_count": {"train": 1, "valid": 1}}


def test_models_with_a_live_record_are_promoted_on_it_and_the_log_says_so(ml_db: MlDb, clean_ml_tables: None,
                                                                         tmp_path: Path) -> None:
    engine, schemas, store = ml_db.engine, ml_db.schemas, ModelStore(tmp_path)
    versions = [store.save(ConstantForecaster(PERSISTENCE, 0.0, -0.004, 0.004), _meta(CUTOFF)),
                store.save(ConstantForecaster(DRIFT, 0.0004, -0.004, 0.004), _meta(CUTOFF)),
                store.save(ConstantForecaster(DRIFT, -0.0004, -0.004, 0.004), _meta(CUTOFF))]
    with engine.begin() as conn:
        for version in versions:
            register(conn, schemas, store.metadata(version))
    switch_production(engine, schemas, PRODUCT, versions[1], (CUTOFF, CUTOFF), {}, "test: a start")
    # two weeks of hourly steps: the production model serves, the two others forecast in its shadow
    forecast_hours(engine, schemas, store, PRODUCT, END - timedelta(hours=LIVE_HOURS + 1), END - timedelta(hours=1),
                   lineage=current_lineage())

    live = live_record(engine, schemas, PRODUCT, END, LIVE_HOURS)
    assert live.hours == LIVE_HOURS and set(live.mae) == set(versions)  # all three on every hour
    # persistence's live MAE is the persistence model's, computed apart from the closes
    assert live.persistence_mae == pytest.approx(live.mae[versions[0]])

    # the model with the worst record serves now, so the promotion switches (and is logged)
    worst = max(versions, key=lambda v: live.mae[v])
    switch_production(engine, schemas, PRODUCT, worst, (CUTOFF, CUTOFF), {}, "test: the worst serves")
    decision = promote(engine, schemas, evaluate(engine, schemas, store, PRODUCT, END, lineage=current_lineage()),
                       PromotionRule(live_hours=LIVE_HOURS, min_live_hours=168))
    best_live = min(versions, key=lambda v: (live.mae[v], v != versions[0]))
    assert (decision.winner, decision.evidence, decision.previous) == (best_live, LIVE, worst)
    with engine.connect() as conn:
        to_version, evidence, metrics, reason = conn.execute(text(
            f"select to_version, evidence, metrics, reason from `{schemas.ml}`.model_promotions "
            "order by promotion_id desc limit 1")).one()
    assert (to_version, evidence) == (best_live, LIVE) and "live MAE over 336 h" in reason
    assert json.loads(metrics)["live"]["hours"] == LIVE_HOURS


def test_promotion_archives_the_candidates_of_older_retrains_so_the_shadows_stay_bounded(
        ml_db: MlDb, clean_ml_tables: None, tmp_path: Path) -> None:
    engine, schemas, store = ml_db.engine, ml_db.schemas, ModelStore(tmp_path)
    # five weekly retrains' baselines (persistence and drift), the newest at CUTOFF
    cutoffs = [CUTOFF - timedelta(days=7 * k) for k in range(5)]
    with engine.begin() as conn:
        for cutoff in cutoffs:
            for forecaster in (ConstantForecaster(PERSISTENCE, 0.0, -0.004, 0.004),
                               ConstantForecaster(DRIFT, 0.0001 * (1 + cutoffs.index(cutoff)), -0.004, 0.004)):
                register(conn, schemas, store.metadata(store.save(forecaster, _meta(cutoff))))
    decision = promote(engine, schemas, evaluate(engine, schemas, store, PRODUCT, END, lineage=current_lineage()),
                       PromotionRule(shadow_retrains=2))
    with engine.connect() as conn:
        rows = conn.execute(text(f"select model_version, status from `{schemas.ml}`.model_registry")).all()
    status: dict[str, str] = {version: state for version, state in rows}
    live = {v for v, s in status.items() if s != "archived"}
    assert live == {v for v in status if v.split("-")[2] in {f"{c:%Y%m%dT%H%MZ}" for c in cutoffs[:2]}} | {
        decision.winner}
    assert set(decision.retired) == set(status) - live and len(decision.retired) >= 5
