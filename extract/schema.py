"""DDL of the raw layer, owned by the extractor (the loader role creates its own tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from candlecast.settings import Schemas

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

# DECIMAL(30,12): 18 integer digits and 12 decimals covers BTC's prices and SHIB-like 1e-8 prices alike;
# volumes of low-priced tokens run to 1e12, hence 36 digits there.
DDL = (
    """
    create table if not exists {raw}.candles (
        product_id   varchar(32)    not null,
        bucket_start datetime       not null comment 'UTC start of the hourly bucket',
        open         decimal(30,12) not null,
        high         decimal(30,12) not null,
        low          decimal(30,12) not null,
        close        decimal(30,12) not null,
        volume       decimal(36,12) not null,
        ingested_at  datetime(6)    not null comment 'UTC time this row was first written or last changed',
        primary key (product_id, bucket_start),
        key ix_candles_ingested_at (ingested_at)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
    """
    create table if not exists {raw}.candle_rejects (
        reject_id    bigint auto_increment primary key,
        run_id       char(36)     not null,
        product_id   varchar(32)  not null,
        bucket_start datetime     null comment 'when the payload had a readable hour-aligned time',
        raw_payload  text         not null,
        reason       varchar(255) not null,
        rejected_at  datetime(6)  not null,
        key ix_candle_rejects_run (run_id),
        key ix_candle_rejects_product_hour (product_id, bucket_start)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
    """
    create table if not exists {raw}.extract_runs (
        run_id       char(36)     not null primary key,
        product_id   varchar(32)  not null,
        mode         varchar(16)  not null comment 'backfill or incremental',
        window_start datetime     not null comment 'first requested hour (UTC, inclusive)',
        window_end   datetime     not null comment 'end of the requested range (UTC, exclusive)',
        requested    int          not null default 0 comment 'hours requested',
        received     int          not null default 0 comment 'candles received inside the range',
        inserted     int          not null default 0,
        updated      int          not null default 0,
        rejected     int          not null default 0,
        gaps         int          not null default 0 comment 'requested hours the API left out',
        status       varchar(16)  not null comment 'running, success, failed or abandoned (owner died)',
        error        text         null,
        started_at   datetime(6)  not null,
        finished_at  datetime(6)  null,
        duration_s   double       null,
        key ix_extract_runs_product_started (product_id, started_at),
        key ix_extract_runs_status (status)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    """,
)


def ensure_raw_tables(target: Engine | Connection, schemas: Schemas) -> None:
    """Create the raw tables if they are missing; safe to call on every run."""
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    def _apply(conn: Connection) -> None:
        for statement in DDL:
            conn.execute(text(statement.format(raw=f"`{schemas.raw}`")))
        # Tables from before the status index: every run looks for `running` rows (orphans), which without it
        # read the whole run log, one row per product and run (250 products: 2 million rows a year).
        has_index = conn.execute(text(
            "select 1 from information_schema.statistics where table_schema = :s and table_name = 'extract_runs' "
            "and index_name = 'ix_extract_runs_status' limit 1"), {"s": schemas.raw}).first()
        if has_index is None:
            conn.execute(text(f"alter table `{schemas.raw}`.extract_runs add index if not exists "
                              "ix_extract_runs_status (status)"))

    if isinstance(target, Engine):
        with target.begin() as conn:
            _apply(conn)
    else:
        _apply(target)
