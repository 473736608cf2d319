"""Writes to the raw layer: idempotent candle upserts, rejects, and the run log.

An upsert compares before it writes. Inside the caller's transaction it locks the stored rows of the
incoming hours (``SELECT ... FOR UPDATE``), classifies every incoming candle as new, changed or unchanged,
and writes only the first two, in multi-row batches. So a re-run counts its rows as unchanged and leaves
``ingested_at`` alone, and the counts are exact (MariaDB's affected-rows for ``ON DUPLICATE KEY UPDATE`` are
not, once the driver sets CLIENT_FOUND_ROWS as SQLAlchemy does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from candlecast.hours import naive_utc
from candlecast.settings import Schemas
from candlecast.sql import quote_ident
from extract.errors import LoadError
from extract.records import Candle, Reject
from extract.windows import Window

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

PAYLOAD_LIMIT = 60_000  # TEXT holds 64 KiB; a payload that large is garbage anyway, keep its head
REASON_LIMIT = 255


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.inserted + other.inserted, self.updated + other.updated, self.unchanged + other.unchanged
        )


CandleRow = tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]  # bucket_start, open, high, low, close, volume
T = TypeVar("T")


def _batches(rows: Sequence[T], size: int) -> list[Sequence[T]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _db_now(conn: Connection) -> datetime:
    return conn.exec_driver_sql("select utc_timestamp(6)").scalar_one()


def _write_batches(
    conn: Connection,
    table: str,
    product_id: str,
    rows: Sequence[CandleRow],
    ingested_at: datetime,
    batch_size: int,
) -> None:
    """Multi-row ``INSERT ... ON DUPLICATE KEY UPDATE`` statements of ``batch_size`` rows.

    The literals are rendered here rather than by the driver: PyMySQL's per-value escaping cost three times
    the server's own work. That is safe because every rendered value is typed by validation: a finite
    ``Decimal`` prints as digits, a datetime through str(). The one string, the product id, is never rendered:
    it is bound once into a session variable (escaping by hand would depend on the server's SQL mode, e.g.
    NO_BACKSLASH_ESCAPES).
    """
    conn.exec_driver_sql("set @candlecast_product_id = %s", (product_id,))
    prefix = "(@candlecast_product_id,'"
    suffix = f",'{ingested_at:%Y-%m-%d %H:%M:%S.%f}')"

    def row(h: datetime, o: Decimal, hi: Decimal, lo: Decimal, c: Decimal, v: Decimal) -> str:
        numbers = f"{o},{hi},{lo},{c},{v}"
        if "E" in numbers:  # str() of a Decimal below 1e-6 is exponent notation, which MariaDB reads as a double
            numbers = ",".join(format(x, "f") for x in (o, hi, lo, c, v))
        return f"{prefix}{h}',{numbers}{suffix}"

    def statement(batch: Sequence[CandleRow]) -> str:
        values = ",".join([row(*r) for r in batch])
        return (
            f"insert into {table} (product_id, bucket_start, open, high, low, close, volume, ingested_at) "
            f"values {values} "
            "on duplicate key update open = values(open), high = values(high), low = values(low), "
            "close = values(close), volume = values(volume), ingested_at = values(ingested_at)"
        )

    batches = _batches(rows, batch_size)
    cursor = conn.connection.cursor()  # the pooled connection's DBAPI cursor
    try:
        if len(batches) == 1:
            cursor.execute(statement(batches[0]))
            return
        # Several batches: render the next while the server runs the current one (the driver waits on the
        # socket without the GIL). One worker keeps the statements in order on the one connection.
        from concurrent.futures import Future, ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upsert") as pool:
            running: Future[int] | None = None
            for batch in batches:
                sql = statement(batch)
                if running is not None:
                    running.result()
                running = pool.submit(cursor.execute, sql)
            if running is not None:
                running.result()
    finally:
        cursor.close()


def upsert_candles(
    conn: Connection, schemas: Schemas, candles: Sequence[Candle], batch_size: int = 1000
) -> UpsertCounts:
    """Insert new hours, update changed ones, leave identical ones untouched; inside the caller's transaction."""
    if not candles:
        return UpsertCounts()
    table = f"{quote_ident(schemas.raw)}.candles"
    counts = UpsertCounts()
    by_product: dict[str, list[Candle]] = {}
    for candle in candles:
        by_product.setdefault(candle.product_id, []).append(candle)

    for product_id, items in by_product.items():
        hours = [naive_utc(c.bucket_start) for c in items]  # DATETIME columns hold naive UTC
        stored: dict[datetime, tuple[Decimal, ...]] = {
            row[0]: tuple(row[1:])
            for row in conn.exec_driver_sql(
                f"select bucket_start, open, high, low, close, volume from {table} "
                "where product_id = %s and bucket_start between %s and %s for update",
                (product_id, min(hours), max(hours)),
            )
        }
        if not stored:  # the common case of new hours: nothing to compare
            writes = [(h, c.open, c.high, c.low, c.close, c.volume) for h, c in zip(hours, items, strict=True)]
            inserted, updated, unchanged = len(writes), 0, 0
        else:
            writes, inserted, updated, unchanged = [], 0, 0, 0
            for hour, c in zip(hours, items, strict=True):
                values = (c.open, c.high, c.low, c.close, c.volume)
                previous = stored.get(hour)
                if previous is None:
                    inserted += 1
                elif previous != values:
                    updated += 1
                else:
                    unchanged += 1
                    continue
                writes.append((hour, *values))
        if writes:
            _write_batches(conn, table, product_id, writes, _db_now(conn), batch_size)
        counts += UpsertCounts(inserted, updated, unchanged)
    return counts


def insert_rejects(conn: Connection, schemas: Schemas, run_id: str, rejects: Sequence[Reject]) -> None:
    if not rejects:
        return
    rejected_at = _db_now(conn)
    conn.exec_driver_sql(
        f"insert into {quote_ident(schemas.raw)}.candle_rejects "
        "(run_id, product_id, bucket_start, raw_payload, reason, rejected_at) "
        "values (%s, %s, %s, %s, %s, %s)",
        [
            (
                run_id,
                r.product_id,
                naive_utc(r.bucket_start) if r.bucket_start else None,
                r.raw_payload[:PAYLOAD_LIMIT],
                r.reason[:REASON_LIMIT],
                rejected_at,
            )
            for r in rejects
        ],
    )


# A run holds a MariaDB named lock for its whole life, on a connection of its own: the lock goes when that
# connection goes, whether the process was killed or the server died. So a ``running`` row whose lock is free
# has no owner left, and the next run marks it abandoned. Run ids are UUIDs, unique across every schema on the
# server, so the name needs no schema; it stays within MariaDB's 64-character limit on lock names.
RUN_LOCK_PREFIX = "candlecast.extract_run."
ABANDONED_REASON = "owner gone: lock released (process or server died) before the run recorded its outcome"


def run_lock_name(run_id: str) -> str:
    return RUN_LOCK_PREFIX + run_id


@contextmanager
def run_lock(engine: Engine, run_id: str) -> Iterator[None]:
    """Hold the run's named lock on a dedicated connection until the block ends."""
    from sqlalchemy.exc import SQLAlchemyError

    conn = engine.connect()
    try:
        got = conn.exec_driver_sql("select get_lock(%s, 0)", (run_lock_name(run_id),)).scalar()
        conn.commit()  # named locks are not transactional: no transaction stays open beside the lock
        if got != 1:
            raise LoadError(f"run lock {run_lock_name(run_id)} is already held (get_lock returned {got})")
    except BaseException:
        conn.close()
        raise
    try:
        yield
    finally:
        try:
            conn.exec_driver_sql("select release_lock(%s)", (run_lock_name(run_id),))
            conn.close()
        except SQLAlchemyError:  # the server died mid-run: the lock died with it
            conn.invalidate()


def abandon_orphaned_runs(engine: Engine, schemas: Schemas, found_by: str) -> list[str]:
    """Mark ``running`` rows whose run lock is free ``abandoned``, with the reason; returns their run ids."""
    table = f"{quote_ident(schemas.raw)}.extract_runs"
    with engine.begin() as conn:
        orphans = list(conn.exec_driver_sql(
            f"select run_id from {table} where status = 'running' and is_used_lock(concat(%s, run_id)) is null",
            (RUN_LOCK_PREFIX,),
        ).scalars())
        if orphans:
            # ``status = 'running'`` again: a run that finished meanwhile keeps its own outcome.
            conn.exec_driver_sql(
                f"update {table} set status = 'abandoned', error = %s, finished_at = utc_timestamp(6) "
                f"where status = 'running' and run_id in ({', '.join(['%s'] * len(orphans))})",
                (f"{ABANDONED_REASON}; found by run {found_by}", *orphans),
            )
    return orphans


def start_run(engine: Engine, schemas: Schemas, run_id: str, product_id: str, mode: str, span: Window) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"insert into {quote_ident(schemas.raw)}.extract_runs "
            "(run_id, product_id, mode, window_start, window_end, requested, status, started_at) "
            "values (%s, %s, %s, %s, %s, %s, 'running', utc_timestamp(6))",
            (run_id, product_id, mode, naive_utc(span.start), naive_utc(span.end), span.hours),
        )


def add_window_counts(
    conn: Connection, schemas: Schemas, run_id: str, received: int, counts: UpsertCounts, rejected: int, gaps: int
) -> None:
    """Bump the run's counters in the window's own transaction, so they always match what was committed."""
    conn.exec_driver_sql(
        f"update {quote_ident(schemas.raw)}.extract_runs set received = received + %s, inserted = inserted + %s, "
        "updated = updated + %s, rejected = rejected + %s, gaps = gaps + %s where run_id = %s",
        (received, counts.inserted, counts.updated, rejected, gaps, run_id),
    )


def finish_run(
    engine: Engine, schemas: Schemas, run_id: str, status: str, duration_s: float, error: str | None = None
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"update {quote_ident(schemas.raw)}.extract_runs set status = %s, error = %s, "
            "finished_at = utc_timestamp(6), duration_s = %s where run_id = %s",
            (status, error, duration_s, run_id),
        )


def last_stored_hour(engine: Engine, schemas: Schemas, product_id: str) -> datetime | None:
    return stored_range(engine, schemas, product_id)[1]


def stored_range(engine: Engine, schemas: Schemas, product_id: str) -> tuple[datetime | None, datetime | None]:
    """The first and newest stored hour of a product (naive UTC), or (None, None) when it has none."""
    with engine.connect() as conn:
        first, last = conn.exec_driver_sql(
            f"select min(bucket_start), max(bucket_start) from {quote_ident(schemas.raw)}.candles "
            "where product_id = %s",
            (product_id,),
        ).one()
    return first, last
