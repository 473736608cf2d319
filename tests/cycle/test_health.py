"""The hourly health step on replayed hours: a broken production model and a stalled source each fail the cycle
(``python -m cycle`` exits 1 naming the product and the check), a healthy hour passes.

Its own base (``ct_health``), so promoting a broken model touches no other test's production model. The
history is fetched over HTTP from the replay server up to the first cycle; the broken model's hours are
replayed with the predict step's own function (``ml.predict.forecast_hours``, one forecast per hour from that
hour's features), and the hour that judges them runs through the cycle command: 24 full cycles would cost
three dbt start-ups each and prove nothing more.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.cycle.conftest import REPO_ROOT, run_cycle

if TYPE_CHECKING:
    from ml.lineage import FeatureLineage
    from ml.train import Candidate

pytestmark = pytest.mark.integration

BASE = "ct_health"
STORE = REPO_ROOT / ".local" / "test" / "health-models"
PRODUCT = "BTC-USD"
HOUR = timedelta(hours=1)
HISTORY_START = datetime(2023, 11, 1, tzinfo=UTC)
# The broken model takes production at this data time (the end of the holdout it was "promoted" on) ...
BROKEN_FROM = datetime(2024, 1, 7, 0, tzinfo=UTC)
# ... and serves every hour until this cycle, whose health step judges it: the 24th hour it forecasts.
JUDGED_CYCLE_END = BROKEN_FROM + 24 * HOUR


def error_line(stderr: str) -> str:
    """The command's one-line error (warnings are logged before it)."""
    return next(line for line in stderr.splitlines() if line.startswith("error: "))


def broken_model(features, cutoff: datetime, lineage: FeatureLineage) -> tuple[Candidate, Candidate]:
    """LightGBM trained on shuffled targets, squared loss, deep trees and the early stopping that would have caught
    it switched off: it fits noise, and forecasts noise (about −18% skill on the week after its cutoff).
    Registered with the metadata of an ordinary training run. With it, that run's persistence baseline."""
    import lightgbm as lgb
    import numpy as np

    from ml.features import TARGET_COLUMN
    from ml.model import LightGBMForecaster
    from ml.train import Candidate, TrainConfig, time_split, train_candidates

    shuffled = features.copy()
    known = shuffled[TARGET_COLUMN].notna()
    shuffled.loc[known, TARGET_COLUMN] = np.random.default_rng(7).permutation(shuffled.loc[known, TARGET_COLUMN])
    config = TrainConfig(validation_hours=24 * 7, min_data_in_leaf=2, num_leaves=255, learning_rate=0.3)
    # the metadata of an ordinary training run on the same features, lineage and all
    ordinary, persistence, _ = train_candidates(shuffled, PRODUCT, cutoff, config, lineage=lineage)
    split = time_split(shuffled, cutoff, config)
    x, y = split.train.loc[:, list(config.features)].to_numpy("float64"), split.train[TARGET_COLUMN].to_numpy("float64")
    point, lower, upper = (
        lgb.train(config.lgb_params(objective, alpha), lgb.Dataset(x, y, feature_name=list(config.features)),
                  num_boost_round=300)
        for objective, alpha in (("regression", None), ("quantile", 0.1), ("quantile", 0.9)))
    forecaster = LightGBMForecaster(point, lower, upper, features=config.features)
    metadata = {**ordinary.metadata, "params": {"deliberately_broken": "shuffled targets"}}
    return Candidate(forecaster, metadata), persistence


@pytest.fixture(scope="module")
def health_env(provision_schemas, replay_url: str) -> dict[str, str]:
    """History up to the judged cycle's hour, the features built, and a broken model in production since
    BROKEN_FROM (set-up through the project's own functions, not under test)."""
    from candlecast.db import engine_for
    from candlecast.dbt_runner import run_dbt
    from candlecast.settings import Schemas
    from cycle.steps import FEATURE_SELECT, INDIRECT_SELECTION, dbt_target_dir
    from ml.features import read_features
    from ml.lineage import read_lineage
    from ml.registry import ensure_ml_tables, register, switch_production
    from ml.shared_store import StoreDatabase
    from ml.store import ModelStore
    from tests.support import backfill_history

    provision_schemas(BASE, fresh=True)
    shutil.rmtree(STORE, ignore_errors=True)
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE, "CANDLECAST_MODEL_STORE": str(STORE),
           "CANDLECAST_EXTRACT_PRODUCTS": PRODUCT, "COINBASE_API_URL": replay_url, "PYTHONPATH": str(REPO_ROOT)}
    backfill_history(env, HISTORY_START, JUDGED_CYCLE_END)
    work = dbt_target_dir(env)
    run_dbt(["build"], env=env, select=FEATURE_SELECT, args=INDIRECT_SELECTION, target_path=work / "target",
            log_path=work / "logs")
    lineage = read_lineage(work / "target" / "manifest.json")  # the project the cycle's own dbt steps build
    schemas = Schemas(BASE)
    engine = engine_for("ml", env)
    store = ModelStore(STORE, StoreDatabase(engine, schemas))
    try:
        cutoff = BROKEN_FROM - 7 * 24 * HOUR
        broken, persistence = broken_model(read_features(engine, schemas, PRODUCT, end=cutoff), cutoff, lineage)
        version = store.save(broken.forecaster, broken.metadata)
        baseline = store.save(persistence.forecaster, persistence.metadata)
        ensure_ml_tables(engine, schemas)
        with engine.begin() as conn:
            register(conn, schemas, store.metadata(version))
            register(conn, schemas, store.metadata(baseline))
        switch_production(engine, schemas, PRODUCT, version, (cutoff, BROKEN_FROM), {},
                          "deliberately broken: trained on shuffled targets (tests/cycle/test_health.py)")
    finally:
        engine.dispose()
    return env


@pytest.fixture(scope="module")
def judged(health_env, replay):
    """22 replayed hours of the broken model's forecasts, then the cycles of the 23rd and the 24th as one range
    (``--start --end``, at 5 past the last hour: the replay server serves both hours' candles)."""
    from candlecast.db import engine_for
    from candlecast.settings import Schemas
    from cycle.steps import dbt_target_dir
    from ml.lineage import read_lineage
    from ml.predict import forecast_hours
    from ml.shared_store import StoreDatabase
    from ml.store import ModelStore

    lineage = read_lineage(dbt_target_dir(health_env) / "target" / "manifest.json")
    engine = engine_for("ml", health_env)
    store = ModelStore(STORE, StoreDatabase(engine, Schemas(BASE)))
    try:
        forecast_hours(engine, Schemas(BASE), store, PRODUCT, BROKEN_FROM, JUDGED_CYCLE_END - 2 * HOUR,
                       lineage=lineage)
    finally:
        engine.dispose()
    replay.set_clock(JUDGED_CYCLE_END + timedelta(minutes=5))
    try:
        return run_cycle(["--start", (JUDGED_CYCLE_END - 2 * HOUR).isoformat(), "--end", JUDGED_CYCLE_END.isoformat()],
                         health_env)
    finally:
        replay.set_clock(None)


def test_a_broken_production_model_fails_the_health_step_within_24_hours_naming_product_and_skill(
        judged, admin_engine) -> None:
    from sqlalchemy import text

    # In both cycles every other step did its work and the health step failed; the range went on after the first
    # (its data work was done) and the command failed at the end, for cron's mail.
    steps = [(line.split()[0], line.split()[1]) for line in judged.stdout.splitlines()
             if line.split() and line.split()[0] in ("extract", "features", "predict", "accuracy", "health")]
    assert steps == 2 * [("extract", "ok"), ("features", "ok"), ("predict", "ok"), ("accuracy", "ok"),
                         ("health", "failed")], judged.stdout + judged.stderr
    assert judged.returncode == 1
    assert judged.stdout.strip().splitlines()[-1] == (
        "2 hourly cycles run, 2024-01-07 22:00..2024-01-08 00:00 UTC: 2 failed their health check")
    errors = [line for line in judged.stderr.splitlines() if line.startswith("error: ")]
    for error, hour in zip(errors, ("2024-01-07 23:00", "2024-01-08 00:00"), strict=True):
        assert f"failed at step health: HealthCheckFailed: health check failed at {hour} UTC: BTC-USD: skill_168h = -" \
            in error
        assert "below the minimum -0.02 (health_production_beats_persistence, error)" in error
        assert "raw_lag_hours" not in error  # the data itself is fresh
    with admin_engine.connect() as conn:
        row = conn.execute(text(f"select * from `{BASE}_marts`.product_health")).one()._mapping
    assert row["status"] == "error" and "skill_168h" in row["failing_checks"]
    assert row["cycle_hour"] == JUDGED_CYCLE_END.replace(tzinfo=None)
    assert row["realized_168h"] == 23  # the broken model's own forecasts, the last not yet realized
    assert row["raw_lag_hours"] == 0 and row["expected_24h"] == row["available_24h"] == 24
    assert row["hours_since_promotion"] == 24 and row["is_production_baseline"] == 0


def test_a_stalled_source_fails_the_health_step_naming_product_and_raw_data(judged, health_env, replay,
                                                                          admin_engine) -> None:
    """The API stops publishing: three hours go by with no new candle, and the cycle after them says so.
    Persistence has replaced the broken model meanwhile (no realized forecast of its own: not judged yet),
    so the freshness check is the one that fails."""
    from candlecast.db import engine_for
    from candlecast.settings import Schemas
    from ml.registry import switch_production
    from ml.shared_store import StoreDatabase
    from ml.store import ModelStore
    from tools.replay import MissingCandle

    engine = engine_for("ml", health_env)
    try:
        store = ModelStore(STORE, StoreDatabase(engine, Schemas(BASE)))
        persistence = next(v for v in store.versions(PRODUCT) if "naive_persistence" in v)
        switch_production(engine, Schemas(BASE), PRODUCT, persistence, (BROKEN_FROM, JUDGED_CYCLE_END), {},
                          "the broken model replaced (tests/cycle/test_health.py)")
    finally:
        engine.dispose()
    stalled = [JUDGED_CYCLE_END + i * HOUR for i in range(3)]
    replay.schedule(*(MissingCandle(hour) for hour in stalled))
    replay.set_clock(stalled[-1] + HOUR + timedelta(minutes=5))
    try:
        proc = run_cycle(["--end", (stalled[-1] + HOUR).isoformat()], health_env)
    finally:
        replay.set_clock(None)
        replay.timeline.clear()
    assert proc.returncode == 1, proc.stdout
    first = error_line(proc.stderr)
    assert "failed at step health: HealthCheckFailed: health check failed at 2024-01-08 03:00 UTC: " in first
    assert "BTC-USD: raw_lag_hours = 3 above the maximum 2 (health_raw_data_is_fresh, error)" in first
    assert "skill_168h" not in first
    # The two hours that had no cycle at all are a warning, not an error: it comes after the error line.
    assert "warning: BTC-USD: availability_24h = 0.9167 below the minimum 0.99" in proc.stderr
