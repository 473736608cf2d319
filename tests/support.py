"""Test helpers shared by areas: the bundled sample and a direct raw-table load.

`load_raw_candles` writes rows straight into the raw table, for the dbt and ML tests that need raw data
but are not testing the extractor (the extractor's own tests go through HTTP).
"""

from __future__ import annotations

import csv
import gzip
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from candlecast.settings import Schemas

BUNDLED_CSV = Path(__file__).resolve().parent.parent / "data" / "coinbase_btc-usd_1h.csv.gz"


@dataclass(frozen=True)
class Candle:
    time: int
    low: Decimal
    high: Decimal
    open: Decimal
    close: Decimal
    volume: Decimal

    @property
    def bucket_start(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC).replace(tzinfo=None)


def bundled_candles() -> list[Candle]:
    with gzip.open(BUNDLED_CSV, "rt", newline="") as fh:
        return [
            Candle(int(r["time"]), Decimal(r["low"]), Decimal(r["high"]), Decimal(r["open"]),
                   Decimal(r["close"]), Decimal(r["volume"]))
            for r in csv.DictReader(fh)
        ]


def load_raw_candles(engine, schemas: Schemas, candles: list[Candle], product_id: str = "BTC-USD") -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from extract.schema import ensure_raw_tables

    ensure_raw_tables(engine, schemas)
    rows = [
        {"p": product_id, "t": c.bucket_start, "o": c.open, "h": c.high, "l": c.low, "c": c.close, "v": c.volume}
        for c in candles
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                f"insert into `{schemas.raw}`.candles "
                "(product_id, bucket_start, open, high, low, close, volume, ingested_at) "
                "values (:p, :t, :o, :h, :l, :c, :v, utc_timestamp(6)) "
                "on duplicate key update open=values(open), high=values(high), low=values(low), "
                "close=values(close), volume=values(volume), ingested_at=values(ingested_at)"
            ),
            rows,
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a private server (fixed ports collide between checkouts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
