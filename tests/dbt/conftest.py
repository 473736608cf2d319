"""dbt test set-up: the feature layer built by dbt itself (a subprocess, as `make dbt-build` runs it).

Base ``ct_dbt`` holds the bundled candles and one ``dbt build`` of the feature layer (its models and all
their dbt tests), source
freshness and ``dbt docs generate``, run once per session. dbt writes its target/ and logs under
``.local/test/dbt/`` so test runs never touch the developer's ``dbt_project/target`` (Airflow reads the
manifest there). Each dbt invocation costs a few seconds of start-up, so the suite keeps them few.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from candlecast.dbt_runner import DbtProcess, DbtResult, start_dbt

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR = REPO_ROOT / ".local" / "test" / "dbt"
BASE = "ct_dbt"

# The mart's column contract (issue 3); the ML layer selects features by these names.
FEATURE_COLUMNS: tuple[str, ...] = (
    "product_id", "hour", "open", "high", "low", "close", "volume", "is_missing_hour",
    *(f"log_return_{k}h" for k in (1, 2, 3, 6, 12, 24, 168)),
    *(f"log_return_1h_lag_{k}" for k in range(1, 25)),
    *(f"return_mean_{n}h" for n in (6, 24, 72, 168)),
    *(f"return_std_{n}h" for n in (6, 24, 72, 168)),
    "realized_vol_24h", "realized_vol_168h", "hl_range", "close_position_in_range",
    "volume_zscore_24h", "volume_zscore_168h", "hour_of_day", "day_of_week", "is_complete",
    "is_forecastable", "target_close_1h", "target_log_return_1h",
)


def start(command: str, *, select: tuple[str, ...] = (), args: tuple[str, ...] = (), base: str,
          name: str) -> DbtProcess:
    """Start ``dbt <command>`` ("build", "source freshness") on ``base``, target/ and logs/ under
    .local/test/dbt/<name>."""
    return start_dbt(command.split(), env={**os.environ, "CANDLECAST_DB_SCHEMA": base}, select=select, args=args,
                     target_path=RUNS_DIR / name / "target", log_path=RUNS_DIR / name / "logs")


def run_dbt(command: str, *, select: tuple[str, ...] = (), args: tuple[str, ...] = (), base: str, name: str,
            check: bool = True) -> DbtResult:
    """``dbt <command>`` on ``base`` with target/ and logs/ under .local/test/dbt/<name>."""
    return start(command, select=select, args=args, base=base, name=name).wait(timeout=900, check=check)


def rows_written(run: DbtResult, model: str) -> int:
    for result in run.artifact("run_results.json")["results"]:
        if result["unique_id"] == f"model.candlecast.{model}":
            return int(result["adapter_response"].get("rows_affected", -1))
    raise AssertionError(f"{model} not in run_results of {run.describe()}")


@dataclass(frozen=True)
class BuiltLayer:
    schemas: Any  # candlecast.settings.Schemas
    build: DbtResult
    freshness: DbtResult
    docs: DbtResult


@pytest.fixture(scope="session")
def built_layer(mariadb: dict[str, str], provision_schemas, admin_engine) -> Iterator[BuiltLayer]:
    """ct_dbt: the bundled candles, then `dbt build --full-refresh`, source freshness and docs generate."""
    from sqlalchemy import text

    from candlecast.db import engine_for
    from tests.support import bundled_candles, load_raw_candles

    schemas = provision_schemas(BASE)
    loader = engine_for("loader")
    from extract.schema import ensure_raw_tables

    ensure_raw_tables(loader, schemas)
    with loader.begin() as conn:
        conn.execute(text(f"delete from `{schemas.raw}`.candles"))
    load_raw_candles(loader, schemas, bundled_candles())
    loader.dispose()
    # this layer's four models and their tests (the accuracy marts have their own area and base)
    build = run_dbt("build", select=("+features_latest",), args=("--indirect-selection", "cautious", "--full-refresh"),
                    base=BASE, name="build")
    # both only read: run them side by side (each dbt start-up costs seconds)
    freshness_started = start("source freshness", base=BASE, name="freshness")
    docs_started = start("docs generate", base=BASE, name="docs")
    freshness = freshness_started.wait(timeout=900)
    docs = docs_started.wait(timeout=900)
    yield BuiltLayer(schemas, build, freshness, docs)
