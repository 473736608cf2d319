"""The same hours run directly (library calls and the dbt CLI, no Airflow), and table snapshots to compare.

This is the reference the DAG runs are held to: Airflow, Cosmos and the data interval must add nothing and
lose nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from candlecast.settings import Schemas
from tests.dags.conftest import run_dbt, store_dir

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

HOUR = timedelta(hours=1)
FEATURES = ["+fct_candle_features", "+features_latest"]
ACCURACY = ["fct_prediction_accuracy", "model_leaderboard"]
# Columns that record *when* something was written (or a run's id), not *what*: they differ between
# any two runs by design and are left out of comparisons.
VOLATILE_COLUMNS = {"metadata", "run_id"}


@contextmanager
def base_env(base: str) -> Iterator[dict[str, str]]:
    saved = {k: os.environ.get(k) for k in ("CANDLECAST_DB_SCHEMA", "CANDLECAST_MODEL_STORE")}
    os.environ["CANDLECAST_DB_SCHEMA"] = base
    os.environ["CANDLECAST_MODEL_STORE"] = str(store_dir(base))
    try:
        yield dict(os.environ)
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def engine(role: str, env: Mapping[str, str]) -> Iterator[tuple[Engine, Schemas]]:
    from candlecast.db import make_engine
    from candlecast.settings import db_settings

    settings = db_settings(role, env)  # type: ignore[arg-type]
    eng = make_engine(settings)
    try:
        yield eng, settings.schemas
    finally:
        eng.dispose()


def backfill(base: str, start: datetime, end: datetime, product: str = "BTC-USD") -> None:
    from extract.pipeline import backfill as extract_backfill
    from extract.settings import ExtractSettings

    with base_env(base) as env, engine("loader", env) as (eng, schemas):
        settings = ExtractSettings.from_env(env)
        result = extract_backfill(product, start, end, engine=eng, schemas=schemas, settings=settings, now=end)
        assert result.status == "success", result.summary()


def dbt_build(base: str, select: list[str]) -> None:
    run_dbt(["build", "--select", *select], base)


def retrain(base: str, cutoff: datetime, window_end: datetime, product: str = "BTC-USD") -> None:
    from ml.evaluate import evaluate
    from ml.promote import promote
    from ml.store import ModelStore
    from ml.train import train

    with base_env(base) as env, engine("ml", env) as (eng, schemas):
        store = ModelStore(store_dir(base))
        train(eng, schemas, store, product, cutoff)
        promote(eng, schemas, evaluate(eng, schemas, store, product, window_end))


def predict(base: str, feature_hour: datetime, product: str = "BTC-USD") -> None:
    from ml.predict import predict_hour
    from ml.store import ModelStore

    with base_env(base) as env, engine("ml", env) as (eng, schemas):
        predict_hour(eng, schemas, ModelStore(store_dir(base)), product, feature_hour)


def hourly(base: str, hour: datetime) -> None:
    """What one hourly interval [hour, hour + 1h) does, done by hand."""
    backfill(base, hour, hour + HOUR)
    dbt_build(base, FEATURES)
    predict(base, hour)
    dbt_build(base, ACCURACY)


def snapshot(admin: Engine, base: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table and view of a base (all its databases), rows sorted, volatile columns left out."""
    from sqlalchemy import text

    schemas = Schemas(base)
    out: dict[str, list[tuple[Any, ...]]] = {}
    with admin.connect() as conn:
        for database in schemas.all():
            tables = conn.execute(
                text("select table_name from information_schema.tables where table_schema = :s "
                     "and table_name not like '%%__dbt_tmp%%' order by table_name"), {"s": database},
            ).scalars().all()
            for table in tables:
                columns = conn.execute(
                    text("select column_name from information_schema.columns where table_schema = :s "
                         "and table_name = :t order by ordinal_position"), {"s": database, "t": table},
                ).scalars().all()
                keep = [c for c in columns if not c.lower().endswith("_at") and c.lower() not in VOLATILE_COLUMNS]
                if database == schemas.raw and table == "extract_runs":
                    continue  # one row per run: the DAG and the direct run are different runs
                cols = ", ".join(f"`{c}`" for c in keep)
                rows = conn.execute(text(f"select {cols} from `{database}`.`{table}`")).all()
                key = f"{database.removeprefix(base)}.{table}"
                out[key] = sorted((tuple(r) for r in rows), key=repr)
    return out


def differences(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    problems = []
    for table in sorted(set(a) | set(b)):
        if table not in a or table not in b:
            problems.append(f"{table}: only in {'DAG run' if table in a else 'direct run'}")
        elif a[table] != b[table]:
            only_a = [r for r in a[table] if r not in b[table]][:3]
            only_b = [r for r in b[table] if r not in a[table]][:3]
            problems.append(f"{table}: {len(a[table])} vs {len(b[table])} rows; "
                            f"DAG only {only_a}; direct only {only_b}")
    return problems
