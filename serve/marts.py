"""Every query the API runs: SELECTs over the marts (``{base}_marts``), nothing else.

What consumers are served is what the hourly step served: ``fct_forecast_outcomes`` holds one row per product
and target hour, the production model's forecast or a labelled fallback (shadow forecasts, made only to be
compared, are never in it). Each function takes an open connection and returns plain rows (dicts of column to
value: ``Decimal``, naive UTC ``datetime``, ``int``, ``str``, ``None``); ranges are ``[start, end)`` over naive
UTC hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from candlecast.settings import Schemas
from candlecast.sql import quote_ident

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Row = dict[str, Any]

FEATURES = "fct_candle_features"
OUTCOMES = "fct_forecast_outcomes"
LEADERBOARD = "model_leaderboard"
HEALTH = "product_health"

# What a forecast looks like to a consumer, in this order.
FORECAST_COLUMNS = (
    "product_id", "target_hour", "feature_hour", "outcome", "model_version", "model_kind", "predicted_close",
    "lower_80", "upper_80", "base_hour", "reason_code", "reason", "realized_close", "abs_error", "updated_at",
)
# The feature columns served when a request names none (`fields=` picks others from the mart's columns).
DEFAULT_FEATURE_FIELDS = (
    "open", "high", "low", "close", "volume", "is_missing_hour", "log_return_1h", "log_return_24h",
    "return_std_24h", "realized_vol_24h", "volume_zscore_24h", "is_complete", "is_forecastable",
)
# Always in a feature row: what it is about.
FEATURE_KEY = ("product_id", "hour")
LEADERBOARD_COLUMNS = (
    "product_id", "rank_168h", "is_ranked_168h", "rank_24h", "model_version", "model_kind", "status",
    "last_promoted_at", "as_of_hour",
    "n_realized", "n_24h", "mae_24h", "persistence_mae_24h", "skill_24h", "n_168h", "mae_168h",
    "persistence_mae_168h", "skill_168h", "coverage_80_168h",
)


def _table(schemas: Schemas, name: str) -> str:
    return f"{quote_ident(schemas.marts)}.{quote_ident(name)}"


def _rows(conn: Connection, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
    from sqlalchemy import text

    return [dict(row) for row in conn.execute(text(sql), params or {}).mappings()]


def products(conn: Connection, schemas: Schemas) -> list[Row]:
    """Every product with feature rows: its first and newest hour, and the newest hour it has a forecast for."""
    # Both aggregates are read off the primary keys (product_id, hour / target_hour): one index dive per product.
    return _rows(conn, f"""
        select f.product_id, f.first_hour, f.newest_hour, o.newest_target_hour
        from (select product_id, min(hour) as first_hour, max(hour) as newest_hour
              from {_table(schemas, FEATURES)} group by product_id) as f
        left join (select product_id, max(target_hour) as newest_target_hour
                   from {_table(schemas, OUTCOMES)} group by product_id) as o
            on o.product_id = f.product_id
        order by f.product_id""")


def product_exists(conn: Connection, schemas: Schemas, product: str) -> bool:
    return bool(_rows(conn, f"select 1 as x from {_table(schemas, FEATURES)} where product_id = :p limit 1",
                      {"p": product}))


def _forecast_select(schemas: Schemas) -> str:
    return "select " + ", ".join(f"o.{c}" for c in FORECAST_COLUMNS) + f" from {_table(schemas, OUTCOMES)} as o"


def latest_forecasts(conn: Connection, schemas: Schemas, product: str | None = None) -> list[Row]:
    """Per product, what was served for its newest target hour (a model forecast, or a fallback)."""
    where, params = ("where product_id = :p", {"p": product}) if product else ("", {})
    return _rows(conn, f"""
        {_forecast_select(schemas)}
        inner join (select product_id, max(target_hour) as target_hour
                    from {_table(schemas, OUTCOMES)} {where} group by product_id) as newest
            on newest.product_id = o.product_id and newest.target_hour = o.target_hour
        order by o.product_id""", params)


def forecasts(conn: Connection, schemas: Schemas, product: str, start: datetime, end: datetime,
              limit: int) -> list[Row]:
    """What was served for each target hour in ``[start, end)``, oldest first, at most ``limit`` rows."""
    return _rows(conn, f"""
        {_forecast_select(schemas)}
        where o.product_id = :p and o.target_hour >= :start and o.target_hour < :end
        order by o.target_hour
        limit :limit""", {"p": product, "start": start, "end": end, "limit": limit})


def newest_target_hour(conn: Connection, schemas: Schemas, product: str) -> datetime | None:
    rows = _rows(conn, f"select max(target_hour) as t from {_table(schemas, OUTCOMES)} where product_id = :p",
                 {"p": product})
    return rows[0]["t"] if rows else None


def newest_hour(conn: Connection, schemas: Schemas, product: str) -> datetime | None:
    rows = _rows(conn, f"select max(hour) as h from {_table(schemas, FEATURES)} where product_id = :p",
                 {"p": product})
    return rows[0]["h"] if rows else None


def feature_columns(conn: Connection, schemas: Schemas) -> tuple[str, ...]:
    """The feature mart's columns, in table order (what ``fields=`` may name)."""
    rows = _rows(conn, "select column_name as c from information_schema.columns "
                       "where table_schema = :s and table_name = :t order by ordinal_position",
                 {"s": schemas.marts, "t": FEATURES})
    return tuple(str(r["c"]) for r in rows)


def features(conn: Connection, schemas: Schemas, product: str, start: datetime, end: datetime,
             fields: Sequence[str], limit: int) -> list[Row]:
    """Feature rows of ``[start, end)``, oldest first: the key columns and ``fields`` (checked by the caller
    against ``feature_columns``; quoted here all the same)."""
    columns = ", ".join(quote_ident(c) for c in (*FEATURE_KEY, *(f for f in fields if f not in FEATURE_KEY)))
    return _rows(conn, f"""
        select {columns} from {_table(schemas, FEATURES)}
        where product_id = :p and hour >= :start and hour < :end
        order by hour
        limit :limit""", {"p": product, "start": start, "end": end, "limit": limit})


def closes(conn: Connection, schemas: Schemas, product: str, start: datetime, end: datetime) -> list[Row]:
    """The closes of ``[start, end)`` for a chart; a missing hour (carried close, not observed) is flagged."""
    return _rows(conn, f"""
        select hour, close, is_missing_hour from {_table(schemas, FEATURES)}
        where product_id = :p and hour >= :start and hour < :end
        order by hour""", {"p": product, "start": start, "end": end})


def leaderboard(conn: Connection, schemas: Schemas, product: str | None = None) -> list[Row]:
    where, params = ("where product_id = :p", {"p": product}) if product else ("", {})
    return _rows(conn, f"""
        select {", ".join(LEADERBOARD_COLUMNS)} from {_table(schemas, LEADERBOARD)} {where}
        order by product_id, rank_168h is null, rank_168h, model_version""", params)


# product_health, the dbt health mart (one row per product as of the cycle's hour), in this order.
HEALTH_COLUMNS = (
    "product_id", "cycle_hour", "newest_raw_hour", "raw_lag_hours", "expected_24h", "available_24h", "fallbacks_24h",
    "availability_24h", "expected_168h", "available_168h", "fallbacks_168h", "availability_168h",
    "production_model_version", "production_model_kind", "is_production_baseline", "last_promotion_hour",
    "hours_since_promotion", "realized_168h", "mae_168h", "persistence_mae_168h", "skill_168h", "coverage_80_168h",
    "status", "failing_checks",
)


def product_health(conn: Connection, schemas: Schemas) -> list[Row]:
    """``product_health``: what the cycle's health step judged for each product, as of its hour."""
    return _rows(conn, f"select {', '.join(HEALTH_COLUMNS)} from {_table(schemas, HEALTH)} order by product_id")
