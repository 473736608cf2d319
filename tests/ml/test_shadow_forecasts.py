"""Shadow forecasts: every registered model that is not archived forecasts the hour the production model serves,
stored with its role; only production is served; a model whose features changed is skipped with the reason; a
re-run changes nothing; a re-run after a promotion serves the new model and keeps one production row per hour."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ml.model import DRIFT, PERSISTENCE
from ml.predict import MODEL, ModelCache, forecast_hour
from ml.registry import ensure_ml_tables, register, switch_production
from ml.store import ModelStore
from ml.train import train
from tests.ml.conftest import MlDb, current_lineage, small_config

pytestmark = pytest.mark.integration

PRODUCT = "BTC-USD"
HOUR = datetime(2024, 1, 9, 20)
CUTOFF = datetime(2024, 1, 2, 23)


def _rows(db: MlDb, sql: str) -> list[tuple]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql.format(ml=db.schemas.ml))).all()]


def test_every_registered_model_forecasts_in_the_shadow_of_production(ml_db: MlDb, clean_ml_tables: None,
                                                                     tmp_path: Path) -> None:
    engine, schemas, store, lineage = ml_db.engine, ml_db.schemas, ModelStore(tmp_path), current_lineage()
    versions = train(engine, schemas, store, PRODUCT, CUTOFF, small_config(), lineage=lineage).versions
    lightgbm, persistence, drift = versions["lightgbm"], versions[PERSISTENCE], versions[DRIFT]
    # a LightGBM model trained on features computed by other SQL than today's: registered, but it cannot forecast
    loaded = store.load(lightgbm)
    stale = store.save(loaded.forecaster, {**loaded.metadata, "training_cutoff": CUTOFF - timedelta(days=7),
                                           "feature_hash": "f" * 64})
    with engine.begin() as conn:
        register(conn, schemas, store.metadata(stale))
    # persistence served once, then LightGBM: persistence is archived and no longer forecasts
    for version in (persistence, lightgbm):
        switch_production(engine, schemas, PRODUCT, version, (CUTOFF, CUTOFF), {}, "test")

    outcome = forecast_hour(engine, schemas, store, PRODUCT, HOUR, ModelCache(), lineage=lineage)
    assert (outcome.outcome, outcome.model_version) == (MODEL, lightgbm)
    assert outcome.shadows == (drift,) and outcome.shadow_skips[0].startswith(f"{stale}: feature lineage changed")
    predictions = "select model_version, role, target_hour from {ml}.predictions order by role, model_version"
    assert _rows(ml_db, predictions) == [(lightgbm, "production", HOUR + timedelta(hours=1)),
                                         (drift, "shadow", HOUR + timedelta(hours=1))]
    skips = "select model_version, target_hour, reason from {ml}.forecast_skips"
    assert [(v, t) for v, t, _ in _rows(ml_db, skips)] == [(stale, HOUR + timedelta(hours=1))]
    assert "feature lineage changed since training" in _rows(ml_db, skips)[0][2]

    # a re-run changes nothing, timestamps included
    everything = ["select * from {ml}.predictions order by model_version", "select * from {ml}.forecast_skips",
                  "select * from {ml}.forecast_outcomes"]
    before = [_rows(ml_db, sql) for sql in everything]
    forecast_hour(engine, schemas, store, PRODUCT, HOUR, ModelCache(), lineage=lineage)
    assert [_rows(ml_db, sql) for sql in everything] == before

    # drift is promoted; the hour re-run is now served by drift, LightGBM's forecast of it becomes a shadow
    switch_production(engine, schemas, PRODUCT, drift, (CUTOFF, CUTOFF), {}, "test")
    rerun = forecast_hour(engine, schemas, store, PRODUCT, HOUR, ModelCache(), lineage=lineage)
    assert rerun.model_version == drift and rerun.shadows == ()  # LightGBM is archived now
    assert _rows(ml_db, predictions) == [(drift, "production", HOUR + timedelta(hours=1)),
                                         (lightgbm, "shadow", HOUR + timedelta(hours=1))]


def test_a_predictions_table_from_before_roles_is_migrated_as_production(ml_db: MlDb, clean_ml_tables: None) -> None:
    ml = ml_db.schemas.ml
    with ml_db.admin.begin() as conn:
        conn.execute(text(f"drop table `{ml}`.predictions"))
        conn.execute(text(
            f"create table `{ml}`.predictions (product_id varchar(32) not null, target_hour datetime not null, "
            "model_version varchar(128) not null, predicted_close decimal(30,12) not null, lower_80 decimal(30,12) "
            "not null, upper_80 decimal(30,12) not null, feature_hour datetime not null, created_at datetime(6) "
            "not null, primary key (product_id, target_hour, model_version))"))
        conn.execute(text(f"insert into `{ml}`.predictions values ('BTC-USD', '2024-01-09 21:00', 'm', 1, 1, 1, "
                          "'2024-01-09 20:00', '2024-01-09 20:00:05')"))
    ensure_ml_tables(ml_db.engine, ml_db.schemas)
    ensure_ml_tables(ml_db.engine, ml_db.schemas)  # a second call finds it migrated
    assert _rows(ml_db, "select model_version, role, updated_at = created_at from {ml}.predictions") == [
        ("m", "production", 1)]
