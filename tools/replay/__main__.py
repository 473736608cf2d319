"""``python -m tools.replay``: serve recorded candles as the Coinbase Exchange API does, until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tools.replay.clock import iso, to_unix
from tools.replay.data import BUNDLED_CSV, BUNDLED_PRODUCT, ReplayDataError, read_csv
from tools.replay.faults import Fault
from tools.replay.server import ReplayServer
from tools.replay.synthetic import DEFAULT_HOURS, synthetic_products
from tools.replay.timeline import CorrectedCandle, Event, LateCandle, MissingCandle


def _clock_range(spec: str) -> tuple[int, int]:
    start, sep, end = spec.partition("..")
    if not sep:
        raise ValueError(f"expected START..END, got {spec!r}")
    return to_unix(start), to_unix(end)


def parse_outage(spec: str) -> Fault:
    """``START..END`` (503s), ``START..END=STATUS`` or ``START..END=hang:SECONDS`` (no answer)."""
    span, _, how = spec.partition("=")
    start, end = _clock_range(span)
    if how.startswith("hang"):
        _, _, seconds = how.partition(":")
        return Fault.outage(start, end, hang_s=float(seconds or 30))
    return Fault.outage(start, end, status=int(how or 503))


def parse_event(kind: str, spec: str) -> Event:
    """``late HOUR=MINUTES``, ``missing HOUR``, ``correct HOUR@AT``."""
    if kind == "late":
        hour, sep, minutes = spec.partition("=")
        if not sep:
            raise ValueError(f"--late wants HOUR=MINUTES, got {spec!r}")
        return LateCandle(hour, float(minutes))
    if kind == "missing":
        return MissingCandle(spec)
    hour, sep, at = spec.partition("@")
    if not sep:
        raise ValueError(f"--correct wants HOUR@AT, got {spec!r}")
    return CorrectedCandle(hour, at)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.replay",
        description="Coinbase-compatible candles API over recorded CSVs (offline runs, demos, tests).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default %(default)s)")
    parser.add_argument(
        "--csv", action="append", default=[], metavar="PRODUCT=PATH",
        help=f"serve PATH (csv or csv.gz: time,low,high,open,close,volume) as PRODUCT; repeatable "
             f"(default {BUNDLED_PRODUCT}={BUNDLED_CSV.name}, the bundled sample)",
    )
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="also serve N synthetic products SYN001-USD... (seeded random walks with gaps, "
                             "tools/replay/synthetic.py) ending where the bundled sample ends (default 0)")
    parser.add_argument("--synthetic-hours", type=int, default=DEFAULT_HOURS, metavar="H",
                        help="hours of history of each synthetic product (default %(default)s)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s per client before 429 (default 10)")
    parser.add_argument("--burst", type=int, default=15, help="token-bucket burst (default 15)")
    parser.add_argument("--no-rate-limit", action="store_true", help="never answer 429")
    parser.add_argument("--describe", action="store_true",
                        help="print what would be served (products, first and last hour) as JSON and exit")
    parser.add_argument("--spill-before", type=int, default=0, metavar="N",
                        help="also send N candles before start, as the API documents it may (default 0)")
    time_group = parser.add_argument_group(
        "time (dev only)",
        "Times are ISO 8601 UTC (2024-01-05T13:00Z) or UNIX seconds. Without --clock every recorded candle is "
        "served and the schedule waits for a clock. The clock never moves by itself: GET/POST "
        "/_replay/clock with {\"now\": TIME} or {\"advance_s\": N} reads and moves it.",
    )
    time_group.add_argument("--clock", metavar="TIME", help="start with the clock at TIME")
    time_group.add_argument("--outage", action="append", default=[], metavar="START..END[=STATUS|=hang:S]",
                            help="every request while the clock is in [START, END) fails (503 by default)")
    time_group.add_argument("--late", action="append", default=[], metavar="HOUR=MINUTES",
                            help="the candle of HOUR appears MINUTES after its hour closes")
    time_group.add_argument("--missing", action="append", default=[], metavar="HOUR",
                            help="the candle of HOUR is never published")
    time_group.add_argument("--correct", action="append", default=[], metavar="HOUR@AT",
                            help="the candle of HOUR changes (close and volume) from clock time AT on")
    time_group.add_argument("--truncate", action="append", default=[], metavar="START..END",
                            help="the first answer while the clock is in [START, END) is cut in half")
    time_group.add_argument("--truncate-request", action="append", default=[], type=int, metavar="N",
                            help="the Nth candles request (1 = the first) gets a truncated answer")
    time_group.add_argument("--no-admin", action="store_true", help="no /_replay/clock endpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    specs = args.csv or [f"{BUNDLED_PRODUCT}={BUNDLED_CSV}"]
    series = {}
    try:
        for spec in specs:
            product, sep, path = spec.partition("=")
            if not sep or not product or not path:
                parser.error(f"--csv wants PRODUCT=PATH, got {spec!r}")
            series[product] = read_csv(Path(path), product)
        if args.synthetic < 0 or args.synthetic_hours < 1:
            parser.error("--synthetic wants N >= 0 and --synthetic-hours H >= 1")
        series.update(synthetic_products(args.synthetic, hours=args.synthetic_hours))
        if args.describe:  # before binding anything: a launcher asks what it is about to serve
            print(json.dumps({"products": {
                product: {"candles": len(s), "first_hour": iso(s.times[0]), "last_hour": iso(s.times[-1])}
                for product, s in series.items() if len(s)}}))
            return 0
        try:
            faults = [parse_outage(spec) for spec in args.outage]
            for spec in args.truncate:
                start, end = _clock_range(spec)
                faults.append(Fault.truncated(from_clock=start, until_clock=end))
            faults += [Fault.truncated(skip=n - 1) for n in args.truncate_request if n >= 1]
            events = [parse_event("late", spec) for spec in args.late]
            events += [parse_event("missing", spec) for spec in args.missing]
            events += [parse_event("correct", spec) for spec in args.correct]
            clock = None if args.clock is None else to_unix(args.clock)
        except ValueError as exc:
            parser.error(str(exc))
        server = ReplayServer(
            series, host=args.host, port=args.port, rate=None if args.no_rate_limit else args.rate,
            burst=args.burst, spill_before=args.spill_before, admin=not args.no_admin,
        )
        server.set_clock(clock)
        server.inject(*faults)
        server.schedule(*events)
    except (OSError, ReplayDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shown = list(series.items())[:5]
    served = ", ".join(f"{p} ({len(s):,} candles)" for p, s in shown)
    served += f" and {len(series) - len(shown)} more products" if len(series) > len(shown) else ""
    print(f"replay server on {server.url} serving {served}; export COINBASE_API_URL={server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
