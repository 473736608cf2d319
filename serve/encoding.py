"""JSON as the API writes it: compact bytes, prices as numbers, times as ISO 8601 UTC with a ``Z``."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from candlecast.hours import naive_utc


def iso_utc(moment: datetime) -> str:
    """``2024-01-10T00:00:00Z``: the database's naive UTC (or an aware time) as an unambiguous ISO 8601 string."""
    return naive_utc(moment).isoformat(timespec="seconds") + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # DECIMAL(30,12) prices: a float prints the shortest repr that reads back the same (46150.38).
        return float(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, default=_default, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
