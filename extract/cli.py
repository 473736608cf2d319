"""``python -m extract``: backfill a UTC range, or catch up incrementally to the last closed hour.

A thin wrapper: it reads the settings from the environment, reads the clock once (``now``, so the still-open
hour is never stored), and calls ``extract.pipeline``. Exit 0 on success; otherwise one line on stderr
saying what failed and where, and exit 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from candlecast.hours import cli_time, floor_hour
from candlecast.inputs import product_id_arg
from extract.windows import clamp_end

if TYPE_CHECKING:
    from extract.pipeline import WindowReport

EPILOG = """\
times are ISO 8601 (2024-01-09, 2024-01-09T13:00, 2024-01-09T13:00:00+02:00); without an offset they are UTC.
ranges are [start, end): the hour starting at --end is not fetched, nor is the hour still open now.

settings (env): COINBASE_API_URL (default https://api.exchange.coinbase.com), CANDLECAST_EXTRACT_PRODUCTS,
CANDLECAST_EXTRACT_RATE, _BURST, _MAX_ATTEMPTS, _TIMEOUT, _BACKOFF_INITIAL, _BACKOFF_MAX, _BATCH_SIZE,
_REFETCH_HOURS (incremental re-fetches this many hours before --end, default 24), _MAX_CATCHUP_HOURS
(incremental catches up at most this many hours, default 168; beyond, it names the backfill to run),
and the database's CANDLECAST_DB_* / CANDLECAST_LOADER_* (see the README).

examples:
  python -m extract backfill --start 2021-12-14 --end 2024-01-10
  python -m extract incremental --end 2024-01-10T00:00
"""


# ISO 8601, with or without an offset (none: UTC): the rule of every CLI (candlecast.hours).
parse_time = cli_time()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m extract",
        description="Fetch closed hourly Coinbase candles into the raw MariaDB tables.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and gaps as they happen")
    sub = parser.add_subparsers(dest="mode", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--product", action="append", dest="products", metavar="ID", type=product_id_arg,
                       help="product id, repeatable (default: CANDLECAST_EXTRACT_PRODUCTS or BTC-USD)")
        p.add_argument("--api-url", help="API base URL (default: COINBASE_API_URL)")
        p.add_argument("--rate", type=float, help="requests per second (default: CANDLECAST_EXTRACT_RATE or 10)")

    backfill = sub.add_parser("backfill", help="fetch an explicit UTC range [start, end)", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    backfill.add_argument("--start", type=parse_time, required=True, help="first hour (floored to the hour)")
    backfill.add_argument("--end", type=parse_time, required=True, help="end of the range, exclusive")
    backfill.add_argument("--no-progress", action="store_true", help="no progress bar")
    common(backfill)

    incremental = sub.add_parser("incremental", help="catch up from the last stored hour to --end and re-fetch "
                                 "the trailing day", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    incremental.add_argument("--end", type=parse_time, help="end, exclusive (default: now's hour, still open)")
    incremental.add_argument("--initial-start", type=parse_time,
                             help="where a product with nothing stored starts (otherwise that is an error)")
    common(incremental)
    return parser


def _advance(bar: Any) -> Callable[[WindowReport], None]:
    """Moves a tqdm bar (``bar``) on by the hours of each window the backfill finishes."""

    def advance(report: WindowReport) -> None:
        bar.update(report.window.hours)

    return advance


def run(args: argparse.Namespace, now: datetime) -> list[str]:
    from candlecast.db import check_connection, engine_for
    from candlecast.settings import ExtractSettings, db_settings
    from extract import pipeline

    settings = ExtractSettings.from_env()
    changes: dict[str, object] = {}
    if args.products:
        changes["products"] = tuple(args.products)
    if args.api_url:
        changes["api_url"] = args.api_url.rstrip("/")
    if args.rate:
        changes["rate_per_second"] = args.rate
    settings = settings.with_(**changes)

    db = db_settings("loader")
    engine = engine_for("loader")
    check_connection(engine, "extract")
    try:
        if args.mode == "incremental":
            results = pipeline.incremental(
                settings.products, args.end or now, engine=engine, schemas=db.schemas, settings=settings,
                now=now, initial_start=args.initial_start,
            )
            return [r.summary() for r in results]

        from tqdm import tqdm

        lines = []
        for product_id in settings.products:
            hours = max(0, int((clamp_end(args.end, now) - floor_hour(args.start)).total_seconds() // 3600))
            with tqdm(total=hours, unit="h", desc=product_id, disable=args.no_progress, leave=False) as bar:
                result = pipeline.backfill(
                    product_id, args.start, args.end, engine=engine, schemas=db.schemas, settings=settings,
                    now=now, progress=_advance(bar),
                )
            lines.append(result.summary())
        return lines
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    from candlecast.db import DatabaseUnavailable
    from candlecast.settings import SettingsError
    from extract.errors import ExtractError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s"
    )
    now = datetime.now(UTC)  # the one clock read: the edge decides what "now" is
    try:
        for line in run(args, now):
            print(line, flush=True)
    except (ExtractError, DatabaseUnavailable, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # still one line, and the type says where to look
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
