"""The demo's extract step: the bundled real candles, over HTTP from the replay server, into MariaDB."""

from __future__ import annotations

from collections.abc import Mapping


def backfill_bundled_sample(env: Mapping[str, str] | None = None) -> str:
    """Start the replay server on a free port, backfill its whole range, stop it; idempotent on re-run.

    Settings come from the environment (database role ``loader``, base ``CANDLECAST_DB_SCHEMA``, the
    extractor's rate and retry settings); only the API URL is pointed at the in-process replay server.
    """
    from candlecast.db import check_connection, make_engine
    from candlecast.hours import HOUR
    from candlecast.settings import ExtractSettings, db_settings
    from extract.pipeline import backfill, describe_hours
    from extract.windows import from_unix
    from tools.replay import ReplayServer, bundled_series

    series = bundled_series()
    db = db_settings("loader", env)
    engine = make_engine(db)
    try:
        check_connection(engine, "extract demo")
        with ReplayServer({series.product_id: series}) as server:
            settings = ExtractSettings.from_env(env).with_(api_url=server.url, products=(series.product_id,))
            first, last = from_unix(series.times[0]), from_unix(series.times[-1])
            result = backfill(series.product_id, first, last + HOUR, engine=engine, schemas=db.schemas,
                              settings=settings)
        with engine.connect() as conn:
            stored = conn.exec_driver_sql(
                f"select count(*), min(bucket_start), max(bucket_start) from `{db.schemas.raw}`.candles "
                "where product_id = %s",
                (series.product_id,),
            ).one()
    finally:
        engine.dispose()
    gaps = describe_hours(result.gaps)
    return "\n".join([
        f"{stored[0]:,} {series.product_id} hourly candles stored, {stored[1]:%Y-%m-%d %H:%M} to "
        f"{stored[2]:%Y-%m-%d %H:%M} UTC ({result.windows} requests to the replay server at "
        f"{settings.rate_per_second:g}/s, {result.duration_s:.1f}s)",
        f"this run: {result.inserted:,} inserted, {result.updated:,} updated, {result.unchanged:,} unchanged, "
        f"{result.rejected} rejected",
        f"missing hours (left out by the API, reported, not invented): {len(result.gaps)}"
        + (f" ({gaps})" if gaps else ""),
        f"data: table {db.schemas.raw}.candles, run log {db.schemas.raw}.extract_runs, on MariaDB {db.describe()}",
    ])
