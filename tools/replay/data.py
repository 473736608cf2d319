"""Candles the replay server serves: a CSV (plain or gzipped) of ``time,low,high,open,close,volume``.

Values are kept as the CSV's own text so the server answers with exactly the recorded numbers.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from candlecast.settings import REPO_ROOT

BUNDLED_CSV = REPO_ROOT / "data" / "coinbase_btc-usd_1h.csv.gz"
BUNDLED_PRODUCT = "BTC-USD"
COLUMNS = ("time", "low", "high", "open", "close", "volume")


class ReplayDataError(ValueError):
    """The CSV given to the replay server is not a candle file."""


@dataclass(frozen=True)
class CandleSeries:
    product_id: str
    times: tuple[int, ...]  # ascending bucket starts, UNIX seconds
    rows: Sequence[tuple[str, str, str, str, str]]  # low, high, open, close, volume as recorded (or made)

    def __len__(self) -> int:
        return len(self.times)

    def between(self, first: int, last: int) -> range:
        """Indexes of the candles with ``first <= time <= last``."""
        return range(bisect.bisect_left(self.times, first), bisect.bisect_right(self.times, last))


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_csv(path: Path, product_id: str) -> CandleSeries:
    """Parse and check a candle CSV; duplicate hours must agree (the first copy is served)."""
    by_time: dict[int, tuple[str, str, str, str, str]] = {}
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != COLUMNS:
            raise ReplayDataError(f"{path}: header must be {','.join(COLUMNS)}, got {header}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise ReplayDataError(f"{path}:{line}: expected 6 columns, got {len(row)}")
            try:
                time = int(row[0])
                for value in row[1:]:
                    Decimal(value)
            except (ValueError, InvalidOperation) as exc:
                raise ReplayDataError(f"{path}:{line}: not a number in {row}") from exc
            values = (row[1], row[2], row[3], row[4], row[5])
            if time in by_time and tuple(map(Decimal, by_time[time])) != tuple(map(Decimal, values)):
                raise ReplayDataError(f"{path}:{line}: hour {time} appears twice with different values")
            by_time.setdefault(time, values)
    times = tuple(sorted(by_time))
    return CandleSeries(product_id, times, tuple(by_time[t] for t in times))


@lru_cache(maxsize=1)
def bundled_series() -> CandleSeries:
    """The bundled real BTC-USD sample (parsed once per process)."""
    return read_csv(BUNDLED_CSV, BUNDLED_PRODUCT)
