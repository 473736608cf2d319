"""Many products in one hourly step: one product's failure does not stop the others' forecasts.

Three synthetic products (``tools.replay.synthetic``) in a base of their own, their feature mart built by dbt; two
have a production model in the shared store, the third none. The hourly predict step, as the cycle and the DAG
run it (a process of its own, as the ml role), writes the two forecasts and fails naming the third.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.cycle.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

BASE = "ct_many"
WORK = REPO_ROOT / ".local" / "test" / "many-products"
HOURS = 400  # the 168 h warm-up and a few weeks of forecastable rows
SERVED, BROKEN = ("SYN001-USD", "SYN002-USD"), "SYN003-USD"


@pytest.fixture(scope="module")
def many_products(admin_engine, provision_schemas) -> tuple[dict[str, str], datetime]:
    """The base with three products' candles and features; the served two with a production model each."""
    from candlecast.db import engine_for
    from candlecast.dbt_runner import run_dbt
    from cycle.steps import FEATURE_SELECT
    from extract.schema import ensure_raw_tables
    from ml.lineage import read_lineage
    from ml.model import PERSISTENCE, ConstantForecaster
    from ml.registry import ensure_ml_tables, register, switch_production
    from ml.shared_store import StoreDatabase
    from ml.store import ModelStore
    from tools.replay import synthetic_products

    schemas = provision_schemas(BASE, fresh=True)
    shutil.rmtree(WORK, ignore_errors=True)
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE, "CANDLECAST_MODEL_STORE": str(WORK / "models"),
           "PYTHONPATH": str(REPO_ROOT)}
    series = synthetic_products(3, hours=HOURS)
    loader = engine_for("loader")
    try:
        ensure_raw_tables(loader, schemas)
        with loader.begin() as conn:
            conn.execute(text(f"insert into `{schemas.raw}`.candles (product_id, bucket_start, low, high, open, close, "
                              "volume, ingested_at) values (:p, from_unixtime(:t), :l, :h, :o, :c, :v, "
                              "utc_timestamp(6))"),
                         [{"p": p, "t": t, "l": lo, "h": h, "o": o, "c": c, "v": v}
                          for p, s in series.items() for t, (lo, h, o, c, v) in zip(s.times, s.rows, strict=True)])
    finally:
        loader.dispose()
    dbt = WORK / "dbt"
    run_dbt(["run"], env=env, select=FEATURE_SELECT, target_path=dbt / "target", log_path=dbt / "logs")
    lineage = read_lineage(WORK / "dbt" / "target" / "manifest.json")
    # the newest hour all three have a candle for (a synthetic product leaves an hour out now and then)
    newest = max(set.intersection(*(set(s.times) for s in series.values())))
    last_hour = datetime.fromtimestamp(newest, UTC).replace(tzinfo=None)
    cutoff = last_hour - timedelta(days=7)
    ml = engine_for("ml")
    try:
        store = ModelStore(WORK / "models", StoreDatabase(ml, schemas))
        ensure_ml_tables(ml, schemas)
        for product in SERVED:
            version = store.save(ConstantForecaster(PERSISTENCE, 0.0, -0.01, 0.01),
                                 {"product": product, "training_cutoff": cutoff, "trained_at": cutoff,
                                  "feature_hash": lineage.hash, "row_count": {"train": 1, "valid": 1}})
            with ml.begin() as conn:
                register(conn, schemas, store.metadata(version))
            switch_production(ml, schemas, product, version, (cutoff, last_hour), {}, "tests/cycle/test_many_products")
    finally:
        ml.dispose()
    return env, last_hour


def test_one_products_failure_leaves_the_others_forecasts_written(many_products, admin_engine) -> None:
    from cycle.context import Interval, RunContext
    from cycle.step_process import StepProcessError
    from cycle.steps import step

    env, last_hour = many_products
    ctx = RunContext.resolve(env, products=(*SERVED, BROKEN))
    ctx = replace(ctx, dbt_manifest=WORK / "dbt" / "target" / "manifest.json")
    with pytest.raises(StepProcessError) as failed:
        step("predict").execute(ctx, Interval.hour_ending(last_hour + timedelta(hours=1)))
    assert failed.value.error_type == "PredictionError"
    assert str(failed.value).startswith(f"{BROKEN}: no production model in {BASE}_ml.model_registry")
    with admin_engine.connect() as conn:
        outcomes = dict(conn.execute(text(f"select product_id, outcome from `{BASE}_ml`.forecast_outcomes "
                                          "where target_hour = :t"), {"t": last_hour + timedelta(hours=1)}).all())
    assert outcomes == dict.fromkeys(SERVED, "model")
