"""dbt test set-up: the feature layer built by dbt itself (a subprocess, as `make dbt-build` runs it).

Base ``ct_dbt`` holds the bundled candles and one ``dbt build`` of the feature layer (its models and all
their dbt tests), source
freshness and ``dbt docs generate``, run once per session. dbt writes its target/ and logs under
``.local/test/dbt/`` so test runs never touch the developer's ``dbt_project/target`` (Airflow reads the
manifest there). Each dbt invocation costs a few seconds of start-up, so the suite keeps them few.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT = REPO_ROOT / ".venv-dbt" / "bin" / "dbt"
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


@dataclass(frozen=True)
class DbtRun:
    """One finished dbt invocation: its exit code, output and target directory."""

    args: tuple[str, ...]
    returncode: int
    output: str
    target: Path

    def json(self, name: str) -> dict[str, Any]:
        return json.loads((self.target / name).read_text())


def start_dbt(*args: str, base: str, name: str) -> tuple[subprocess.Popen[str], Path]:
    """Start ``dbt <args>`` on ``base`` with target/ and logs/ under .local/test/dbt/<name>."""
    target = RUNS_DIR / name / "target"
    cmd = [str(DBT), *args, "--project-dir", str(REPO_ROOT / "dbt_project"), "--profiles-dir", str(REPO_ROOT),
           "--target-path", str(target), "--log-path", str(RUNS_DIR / name / "logs")]
    process = subprocess.Popen(cmd, env={**os.environ, "CANDLECAST_DB_SCHEMA": base}, cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, target


def finish_dbt(started: tuple[subprocess.Popen[str], Path], args: tuple[str, ...], base: str,
               check: bool = True) -> DbtRun:
    process, target = started
    output, _ = process.communicate(timeout=900)
    run = DbtRun(args, process.returncode, output, target)
    if check and process.returncode != 0:
        raise AssertionError(f"dbt {' '.join(args)} on {base} failed:\n{run.output[-6000:]}")
    return run


def run_dbt(*args: str, base: str, name: str, check: bool = True) -> DbtRun:
    """``dbt <args>`` on ``base`` with target/ and logs/ under .local/test/dbt/<name>."""
    return finish_dbt(start_dbt(*args, base=base, name=name), args, base, check)


def rows_written(run: DbtRun, model: str) -> int:
    for result in run.json("run_results.json")["results"]:
        if result["unique_id"] == f"model.candlecast.{model}":
            return int(result["adapter_response"].get("rows_affected", -1))
    raise AssertionError(f"{model} not in run_results of dbt {' '.join(run.args)}")


@dataclass(frozen=True)
class BuiltLayer:
    schemas: Any  # candlecast.settings.Schemas
    build: DbtRun
    freshness: DbtRun
    docs: DbtRun


@pytest.fixture(scope="session")
def built_layer(mariadb: dict[str, str], provision_schemas, admin_engine) -> Iterator[BuiltLayer]:  # type: ignore[no-untyped-def]
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
    build = run_dbt("build", "--full-refresh", "--select", "+features_latest", "--indirect-selection", "cautious",
                    base=BASE, name="build")
    # both only read: run them side by side (each dbt start-up costs seconds)
    freshness_args, docs_args = ("source", "freshness"), ("docs", "generate")
    freshness_started = start_dbt(*freshness_args, base=BASE, name="freshness")
    docs_started = start_dbt(*docs_args, base=BASE, name="docs")
    freshness = finish_dbt(freshness_started, freshness_args, BASE)
    docs = finish_dbt(docs_started, docs_args, BASE)
    yield BuiltLayer(schemas, build, freshness, docs)
