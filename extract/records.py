"""The extractor's records: a validated candle and a rejected payload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class Candle:
    """One closed hourly bucket, as stored in ``{base}_raw.candles`` (bucket_start is aware UTC)."""

    product_id: str
    bucket_start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def values(self) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        return (self.open, self.high, self.low, self.close, self.volume)


@dataclass(frozen=True)
class Reject:
    """A payload element that failed validation; stored with the reason, never loaded as a candle."""

    product_id: str
    bucket_start: datetime | None  # set when the element had a readable hour-aligned time
    raw_payload: str
    reason: str
