"""``python -m tools.replay``: serve recorded candles as the Coinbase Exchange API does, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tools.replay.data import BUNDLED_CSV, BUNDLED_PRODUCT, ReplayDataError, read_csv
from tools.replay.server import ReplayServer


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
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s per client before 429 (default 10)")
    parser.add_argument("--burst", type=int, default=15, help="token-bucket burst (default 15)")
    parser.add_argument("--no-rate-limit", action="store_true", help="never answer 429")
    parser.add_argument("--spill-before", type=int, default=0, metavar="N",
                        help="also send N candles before start, as the API documents it may (default 0)")
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
        server = ReplayServer(
            series, host=args.host, port=args.port, rate=None if args.no_rate_limit else args.rate,
            burst=args.burst, spill_before=args.spill_before,
        )
    except (OSError, ReplayDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    served = ", ".join(f"{p} ({len(s):,} candles)" for p, s in series.items())
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
