"""Benchmark the extractor: a rate-limited backfill of the bundled sample, and upsert throughput.

1. Backfill the bundled 18,164 candles (18,168 requested hours, 61 requests of at most 300) over HTTP from
   the replay server, which enforces the API's own limit: 10 requests/s with a burst of 15. The floor is what
   that bucket allows at best: 15 requests at once from the full bucket, the other 46 at 10/s, so
   (61 - 15) / 10 = 4.6 s. (Plain 61 / 10 = 6.1 s would ignore the burst and flatter us.) The extractor's own
   bucket has a burst of 10, to stay clear of 429s, so its own best is (61 - 10) / 10 = 5.1 s.
   Target: wall time ≤ 1.3 × 4.6 s.
2. Upsert the same 18,164 rows into an empty raw table (``extract.load.upsert_candles``, one transaction)
   against ``LOAD DATA LOCAL INFILE`` of the same rows into a scratch table of the same definition.
   Target: upsert time ≤ 2 × LOAD DATA time (the statement and its commit; writing the file not counted).
   Best of 5 runs each, medians shown too: on a shared machine the best run is the least disturbed one.

Runs against the project's local MariaDB (``make bench``) as the admin role, in scratch databases
``bench_extract*`` that set-up provisions and the admin drops afterwards. ``local_infile`` is off on that
server; it is turned on for the LOAD DATA side of this run only, and off again. Prints figures and targets;
never fails on timing.

    make bench        # or: .venv/bin/python bench/bench_extract.py
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from candlecast import mariadb  # noqa: E402
from candlecast.db import check_connection, make_engine  # noqa: E402
from candlecast.hours import HOUR, naive_utc  # noqa: E402
from candlecast.settings import (  # noqa: E402
    ExtractSettings,
    Schemas,
    db_settings,
)
from extract import load  # noqa: E402
from extract.pipeline import backfill  # noqa: E402
from extract.records import Candle  # noqa: E402
from extract.schema import ensure_raw_tables  # noqa: E402
from extract.validate import parse_candle  # noqa: E402
from extract.windows import MAX_CANDLES_PER_REQUEST, from_unix  # noqa: E402
from tools.replay import ReplayServer, bundled_series  # noqa: E402

SCRATCH = Schemas("bench_extract")
SERVER_RATE, SERVER_BURST = 10.0, 15
BACKFILL_TARGET = 1.3
UPSERT_TARGET = 2.0
REPEATS = 7
BATCH_SIZE = ExtractSettings().batch_size


def verdict(ratio: float, target: float) -> str:
    return "within target" if ratio <= target else "MISSES target"


def reset(engine, table: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"truncate table `{SCRATCH.raw}`.{table}")  # no purge backlog, unlike delete


def bench_backfill(engine) -> None:
    series = bundled_series()
    start, end = from_unix(series.times[0]), from_unix(series.times[-1]) + HOUR
    hours = int((end - start) / HOUR)
    requests = math.ceil(hours / MAX_CANDLES_PER_REQUEST)
    floor = (requests - SERVER_BURST) / SERVER_RATE
    reset(engine, "candles")
    refused = 0

    def timed_run():
        nonlocal refused
        # a fresh server per run: its bucket starts full, as it would for runs an hour apart
        with ReplayServer({series.product_id: series}, rate=SERVER_RATE, burst=SERVER_BURST) as server:
            settings = ExtractSettings.from_env().with_(api_url=server.url, products=(series.product_id,))
            began = time.perf_counter()
            result = backfill(series.product_id, start, end, engine=engine, schemas=SCRATCH, settings=settings)
            elapsed = time.perf_counter() - began
            refused += sum(1 for r in server.requests if r.status == 429)
        return result, elapsed, settings

    first, fresh, settings = timed_run()
    again, rerun, _ = timed_run()
    client_floor = (requests - settings.burst) / settings.rate_per_second
    print(f"backfill of the bundled sample: {first.received:,} candles, {hours:,} hours, {requests} requests, "
          f"server limit {SERVER_RATE:g}/s burst {SERVER_BURST}, client {settings.rate_per_second:g}/s "
          f"burst {settings.burst}; {refused} answers were 429")
    print(f"  floor (server bucket: {SERVER_BURST} at once, {requests - SERVER_BURST} at {SERVER_RATE:g}/s): "
          f"{floor:.2f} s; the client's own best with burst {settings.burst}: {client_floor:.2f} s")
    print(f"  into empty tables: {fresh:.2f} s = {fresh / floor:.2f}x floor "
          f"(target <= {BACKFILL_TARGET}x: {verdict(fresh / floor, BACKFILL_TARGET)}); "
          f"{first.inserted:,} inserted")
    print(f"  re-run, nothing changes: {rerun:.2f} s = {rerun / floor:.2f}x floor "
          f"(target <= {BACKFILL_TARGET}x: {verdict(rerun / floor, BACKFILL_TARGET)}); "
          f"{again.unchanged:,} unchanged, {again.inserted + again.updated} written")


def candles() -> list[Candle]:
    series = bundled_series()
    return [parse_candle(series.product_id, [t, *(Decimal(v) for v in row)])
            for t, row in zip(series.times, series.rows, strict=True)]


def time_upsert(engine, rows: list[Candle], per_window: bool) -> float:
    reset(engine, "candles")
    chunk = MAX_CANDLES_PER_REQUEST if per_window else len(rows)
    began = time.perf_counter()
    for i in range(0, len(rows), chunk):
        with engine.begin() as conn:
            load.upsert_candles(conn, SCRATCH, rows[i : i + chunk], batch_size=BATCH_SIZE)
    return time.perf_counter() - began


def time_load_data(admin, rows: list[Candle]) -> tuple[float, float]:
    import pymysql

    conn = pymysql.connect(host=admin.host, port=admin.port, user=admin.user, password=admin.password,
                           local_infile=True, init_command="set time_zone = '+00:00'")
    try:
        with conn.cursor() as cur:
            cur.execute(f"truncate table `{SCRATCH.raw}`.candles_load_data")
        conn.commit()
        began = time.perf_counter()
        with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as fh:
            fh.writelines(
                f"{c.product_id}\t{naive_utc(c.bucket_start)}\t{c.open}\t{c.high}\t{c.low}\t{c.close}\t"
                f"{c.volume}\t2024-01-10 00:00:00\n" for c in rows
            )
        written = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(
                f"load data local infile %s into table `{SCRATCH.raw}`.candles_load_data "
                "fields terminated by '\\t' (product_id, bucket_start, open, high, low, close, volume, ingested_at)",
                (fh.name,),
            )
        conn.commit()
        done = time.perf_counter()
        os.unlink(fh.name)
        return done - written, written - began
    finally:
        conn.close()


def bench_upsert(engine, admin) -> None:
    rows = candles()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"drop table if exists `{SCRATCH.raw}`.candles_load_data")
        conn.exec_driver_sql(f"create table `{SCRATCH.raw}`.candles_load_data like `{SCRATCH.raw}`.candles")
    # Interleaved, so both sides of each pair see the same machine (it is shared, and busy at times).
    loads, upserts, windows = [], [], []
    for _ in range(REPEATS):
        loads.append(time_load_data(admin, rows))
        upserts.append(time_upsert(engine, rows, per_window=False))
        windows.append(time_upsert(engine, rows, per_window=True))
    load_times = [t for t, _ in loads]
    ratios = sorted(u / t for u, t in zip(upserts, load_times, strict=True))
    ratio = statistics.median(ratios)
    window_ratio = statistics.median(w / t for w, t in zip(windows, load_times, strict=True))
    print(f"upsert of {len(rows):,} rows into an empty table, {REPEATS} interleaved pairs (median [best]):")
    print(f"  LOAD DATA LOCAL INFILE: {statistics.median(load_times):.3f} s [{min(load_times):.3f}] "
          f"({len(rows) / statistics.median(load_times):,.0f} rows/s; writing its file took another "
          f"{statistics.median(w for _, w in loads):.3f} s)")
    print(f"  upsert_candles, one transaction: {statistics.median(upserts):.3f} s [{min(upserts):.3f}] "
          f"({len(rows) / statistics.median(upserts):,.0f} rows/s)")
    print(f"  ratio, median of the pairs: {ratio:.2f}x LOAD DATA (pairs from {ratios[0]:.2f}x to {ratios[-1]:.2f}x; "
          f"best against best {min(upserts) / min(load_times):.2f}x); target <= {UPSERT_TARGET}x: "
          f"{verdict(ratio, UPSERT_TARGET)}")
    print(f"  as the pipeline commits, one transaction per 300-row window: {statistics.median(windows):.3f} s "
          f"[{min(windows):.3f}] = {window_ratio:.2f}x LOAD DATA (median of the pairs)")


def main() -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="  (log) %(levelname)s %(name)s: %(message)s")
    admin = db_settings("admin")
    engine = make_engine(admin)
    check_connection(engine, "bench_extract")
    print(f"machine: {platform.system()} {platform.release()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}; MariaDB {admin.describe()}")
    mariadb.provision(SCRATCH, fresh=True)
    try:
        ensure_raw_tables(engine, SCRATCH)
        bench_backfill(engine)
        with mariadb.local_infile_enabled():
            bench_upsert(engine, admin)
    finally:
        with engine.begin() as conn:
            for database in SCRATCH.all():
                conn.exec_driver_sql(f"drop database if exists `{database}`")
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
