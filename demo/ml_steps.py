"""The ML steps of `make demo`: train, evaluate + promote, 48 h of predictions, accuracy marts, a backtest.

Each step returns its summary; times come from the data (the newest hour in the feature mart), never
from the wall clock, so the demo gives the same result on every run and every machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, SupportsFloat

from candlecast.hours import HOUR

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from candlecast.settings import MlSettings, Schemas
    from ml.lineage import FeatureLineage
    from ml.store import ModelStore

PREDICT_HOURS = 48


def _context(env: Mapping[str, str] | None = None) -> tuple[Engine, Schemas, MlSettings, ModelStore]:
    from candlecast.db import check_connection, make_engine
    from candlecast.settings import db_settings, ml_settings
    from ml.shared_store import StoreDatabase
    from ml.store import ModelStore

    db = db_settings("ml", env)
    engine = make_engine(db)
    check_connection(engine, "candlecast ml")
    settings = ml_settings(env)
    return engine, db.schemas, settings, ModelStore(settings.store_dir, StoreDatabase(engine, db.schemas))


def _data_end(engine: Engine, schemas: Schemas, product: str) -> datetime:
    from ml.features import newest_hour

    # Windows end (exclusive) on target hours: the newest row's hour is the last one whose close is known.
    return newest_hour(engine, schemas, product) + HOUR


def _lineage(env: Mapping[str, str] | None) -> FeatureLineage:
    """The feature lineage of the project the demo's features step just built (its dbt wrote the manifest)."""
    from candlecast.settings import dbt_settings
    from ml.lineage import read_lineage

    return read_lineage(dbt_settings(env).manifest_path)


def train_step(env: Mapping[str, str] | None = None) -> str:
    from ml.train import TrainConfig, train

    engine, schemas, settings, store = _context(env)
    try:
        end = _data_end(engine, schemas, settings.product)
        cutoff = end - timedelta(hours=settings.holdout_hours)
        result = train(engine, schemas, store, settings.product, cutoff, TrainConfig(num_threads=settings.num_threads),
                       lineage=_lineage(env))
        return f"{result.summary()}\nmodel store: {store.root}"
    finally:
        engine.dispose()


def promote_step(env: Mapping[str, str] | None = None) -> str:
    from ml.evaluate import evaluate
    from ml.promote import promote

    engine, schemas, settings, store = _context(env)
    try:
        report = evaluate(engine, schemas, store, settings.product, _data_end(engine, schemas, settings.product),
                          lineage=_lineage(env))
        return f"{report.table()}\n{promote(engine, schemas, report).summary()}"
    finally:
        engine.dispose()


def predict_step(env: Mapping[str, str] | None = None) -> str:
    from ml.predict import predict_range

    engine, schemas, settings, store = _context(env)
    try:
        end = _data_end(engine, schemas, settings.product)
        predictions = predict_range(engine, schemas, store, settings.product, end - PREDICT_HOURS * HOUR, end,
                                    lineage=_lineage(env))
    finally:
        engine.dispose()
    last = predictions[-1]
    return (f"{len(predictions)} hourly predictions written to {schemas.ml}.predictions with {last.model_version}; "
            f"next hour {last.target_hour:%Y-%m-%d %H:%M} UTC: ${last.predicted_close:,.2f} "
            f"(80%: ${last.lower_80:,.2f} .. ${last.upper_80:,.2f})")


def build_accuracy_step() -> str:
    """dbt build of the accuracy marts and their tests (as the transformer: dbt's role)."""
    import os

    from candlecast.dbt_runner import run_dbt

    # a full refresh: the demo rebuilds the marts from whatever the ML tables hold (and a mart built by an older
    # version of the project, whose columns differ, is rebuilt instead of failing the incremental guard)
    return f"dbt: {run_dbt(['build'], env=os.environ, select=['tag:accuracy'], args=['--full-refresh']).summary()}"


def describe_leaderboard_step(env: Mapping[str, str] | None = None) -> str:
    """The leaderboard as a SQL consumer (the `reader` role) sees it."""
    from sqlalchemy import text

    from candlecast.db import engine_for
    from candlecast.settings import db_settings

    schemas = db_settings("reader", env).schemas
    engine = engine_for("reader", env)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                f"select model_version, status, n_realized, mae_24h, skill_24h, mae_168h, skill_168h, "
                f"coverage_80_168h from `{schemas.marts}`.model_leaderboard "
                "order by rank_168h is null, rank_168h")).all()
    finally:
        engine.dispose()

    def num(v: SupportsFloat | None, fmt: str) -> str:  # a DECIMAL or DOUBLE column, NULL when not yet known
        return "-" if v is None else format(float(v), fmt)

    lines = [f"{schemas.marts}.model_leaderboard:",
             f"  {'model':<58} {'status':<10} {'n':>4} {'MAE 24h':>9} {'skill':>8} {'MAE 168h':>9} {'skill':>8} "
             f"{'cov80':>6}"]
    for r in rows:
        lines.append(f"  {r[0]:<58} {r[1] or '-':<10} {r[2]:>4} {num(r[3], '9.2f')} {num(r[4], '+8.4f')} "
                     f"{num(r[5], '9.2f')} {num(r[6], '+8.4f')} {num(r[7], '6.3f')}")
    return "\n".join(lines)


def backtest_step(env: Mapping[str, str] | None = None) -> str:
    """A short walk-forward backtest (``CANDLECAST_DEMO_BACKTEST_WEEKS``, default 8) and its chart."""
    from ml.backtest import walk_forward, write_outputs
    from ml.features import read_features
    from ml.train import TrainConfig

    engine, schemas, settings, _store = _context(env)
    weeks = settings.demo_backtest_weeks
    try:
        end = _data_end(engine, schemas, settings.product)
        features = read_features(engine, schemas, settings.product, end=end)
    finally:
        engine.dispose()
    result = walk_forward(features, settings.product, end - timedelta(weeks=weeks), end,
                          TrainConfig(num_threads=settings.num_threads))
    out = write_outputs(result, settings.backtest_dir)
    return out.summary() + "\n  (the year-long backtest: `make backtest`)"
