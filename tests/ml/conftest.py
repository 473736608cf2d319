"""ML test set-up: base ``ct_ml`` on the tests' MariaDB, the bundled candles, and the real dbt feature mart.

The feature mart is built once per session by dbt itself (a subprocess, like `make dbt-build`), so
the ML code is tested against the table it reads in production, not a look-alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from candlecast import dbt_runner
from candlecast.dbt_runner import DbtResult
from candlecast.settings import Schemas
from ml.train import TrainConfig

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ml.lineage import FeatureLineage

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = "ct_ml"
DBT_DIR = REPO_ROOT / ".local" / "test" / "dbt-ml"


def small_config(**overrides: Any) -> TrainConfig:
    """Few, shallow trees: the properties under test (splits, determinism, leakage) do not need accuracy."""
    small = TrainConfig(validation_hours=24 * 7, num_boost_round=40, early_stopping_rounds=10, learning_rate=0.1,
                        num_leaves=7, min_data_in_leaf=50, min_train_rows=200, num_threads=1)
    return replace(small, **overrides)


def fast_load_raw(engine, schemas: Schemas) -> int:
    """The bundled candles into ``{base}_raw.candles`` in multi-row statements (seconds, not tens of them)."""
    from sqlalchemy import text

    from extract.schema import ensure_raw_tables
    from tests.support import bundled_candles

    candles = bundled_candles()
    ensure_raw_tables(engine, schemas)
    with engine.begin() as conn:
        conn.execute(text(f"delete from `{schemas.raw}`.candles"))
        for i in range(0, len(candles), 2000):
            chunk = candles[i:i + 2000]
            values = ", ".join(
                f"('BTC-USD', '{c.bucket_start:%Y-%m-%d %H:%M:%S}', {c.open}, {c.high}, {c.low}, {c.close}, "
                f"{c.volume}, utc_timestamp(6))" for c in chunk
            )
            conn.execute(text(f"insert into `{schemas.raw}`.candles (product_id, bucket_start, open, high, low, "
                              f"close, volume, ingested_at) values {values}"))
    return len(candles)


def run_dbt(command: str, select: str, base: str = BASE, *flags: str) -> DbtResult:
    return dbt_runner.run_dbt([command], env={**os.environ, "CANDLECAST_DB_SCHEMA": base}, select=[select],
                              args=flags, target_path=DBT_DIR / "target", log_path=DBT_DIR / "logs", timeout=600)


def current_lineage() -> FeatureLineage:
    """The feature lineage of the dbt project the tests built the feature mart with (its manifest is in DBT_DIR)."""
    from ml.lineage import read_lineage

    return read_lineage(DBT_DIR / "target" / "manifest.json")


ML_TABLES = ("forecast_skips", "forecast_outcomes", "predictions", "model_promotions", "model_evaluations",
             "model_registry")
# the shared model store's (ml.shared_store): tests that go through the CLI or the cycle store models there
STORE_TABLES = ("model_store_files", "model_store_versions")


@dataclass(frozen=True)
class MlDb:
    schemas: Schemas
    engine: Engine  # of the ml role
    admin: Engine


@pytest.fixture(scope="session")
def ml_db(mariadb: dict[str, str], provision_schemas, admin_engine) -> Iterator[MlDb]:
    """Base ct_ml with the bundled candles and the dbt-built feature mart; the ML tables start empty."""
    from sqlalchemy import text

    from candlecast.db import engine_for

    schemas = provision_schemas(BASE)
    fast_load_raw(engine_for("loader"), schemas)
    run_dbt("run", "+fct_candle_features")
    with admin_engine.begin() as conn:
        for table in (*ML_TABLES, *STORE_TABLES):
            conn.execute(text(f"drop table if exists `{schemas.ml}`.{table}"))
    engine = engine_for("ml")  # the role ML runs as in production; schemas are passed explicitly
    yield MlDb(schemas, engine, admin_engine)
    engine.dispose()


@pytest.fixture(scope="session")
def bundled_frame(ml_db: MlDb) -> pd.DataFrame:
    """The dbt feature mart of the bundled data, as the ML code reads it."""
    from ml.features import read_features

    return read_features(ml_db.engine, ml_db.schemas, "BTC-USD")


@pytest.fixture()
def clean_ml_tables(ml_db: MlDb) -> Iterator[None]:
    from sqlalchemy import text

    from ml.registry import ensure_ml_tables
    from ml.shared_store import StoreDatabase

    ensure_ml_tables(ml_db.engine, ml_db.schemas)
    StoreDatabase(ml_db.engine, ml_db.schemas).ensure_tables()
    with ml_db.admin.begin() as conn:
        for table in (*ML_TABLES, *STORE_TABLES):
            conn.execute(text(f"delete from `{ml_db.schemas.ml}`.{table}"))
    yield
