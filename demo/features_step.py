"""The `make demo` step of the feature layer: `dbt build` of the features, source freshness, newest rows.

dbt runs through ``candlecast.dbt_runner`` with the connection settings in its environment; ``profiles.yml``
reads them through ``env_var()``.
"""

from __future__ import annotations

import os
from typing import SupportsFloat

from candlecast.dbt_runner import run_dbt

# The feature layer: staging -> hourly spine -> fct_candle_features -> features_latest, with their tests.
FEATURE_SELECTION = ("+features_latest",)
FEATURE_BUILD_ARGS = ("--indirect-selection", "cautious")


def build_features_step() -> str:
    """`dbt build` of the feature layer and source freshness (as the transformer: dbt's role)."""
    build = run_dbt(["build"], env=os.environ, select=FEATURE_SELECTION, args=FEATURE_BUILD_ARGS)
    # Reported, not fatal: the bundled candles keep the ingested_at of their first load, so a demo re-run
    # more than 6 h later finds them "stale", which is true and says nothing about the build.
    freshness = run_dbt(["source", "freshness"], env=os.environ, check=False)
    return "\n".join([f"dbt build: {build.last_line_with('Done.') or 'ok'}",
                      f"source freshness: {freshness.last_line_with(' freshness of ') or 'ok'}"])


def describe_features_step() -> str:
    """The newest feature rows as a SQL consumer (the `reader` role) sees them."""
    from sqlalchemy import text

    from candlecast.db import engine_for
    from candlecast.settings import DbServer

    schemas = DbServer.from_env().schemas
    reader = engine_for("reader")
    try:
        with reader.connect() as conn:
            total, complete, forecastable, missing = conn.execute(text(
                "select count(*), sum(is_complete), sum(is_forecastable), sum(is_missing_hour) "
                f"from `{schemas.marts}`.fct_candle_features"
            )).one()
            newest = conn.execute(text(
                "select product_id, hour, close, log_return_1h, return_std_24h, volume_zscore_24h, is_complete, "
                f"target_close_1h from `{schemas.marts}`.fct_candle_features order by hour desc, product_id limit 5"
            )).all()
    finally:
        reader.dispose()
    header = (f"{'product':<9} {'hour (UTC)':<19} {'close':>11} {'ret_1h':>9} {'std_24h':>8} {'vol_z24':>7} "
              f"{'complete':>8} {'target_close_1h':>15}")
    rows = [
        f"{r.product_id:<9} {r.hour:%Y-%m-%d %H:%M}    {float(r.close):>11.2f} {_num(r.log_return_1h, 5):>9} "
        f"{_num(r.return_std_24h, 5):>8} {_num(r.volume_zscore_24h, 2):>7} {r.is_complete:>8} "
        f"{_num(r.target_close_1h, 2):>15}"
        for r in newest
    ]
    return "\n".join([
        f"{schemas.marts}.fct_candle_features: {total:,} product-hours, {int(forecastable or 0):,} forecastable "
        f"({int(complete or 0):,} with every window gap-free), {int(missing or 0)} missing hours filled; "
        "the newest rows (target NULL: the next hour is not closed yet):",
        header,
        *rows,
        f"docs: `make docs-serve` -> http://127.0.0.1:8580; SQL: the reader role on {schemas.marts} "
        "(README, 'The feature layer').",
    ])


def _num(value: SupportsFloat | None, digits: int) -> str:
    return "NULL" if value is None else f"{float(value):.{digits}f}"

