"""Strict validation of the candles in one answer, and normalisation to exactly the requested window.

Every element of the answer either becomes a ``Candle`` inside the window, is set aside as lying outside it
(the API may send buckets before ``start``; that is documented behaviour, not an error), or becomes a
``Reject`` with the reason. Duplicates of one hour with identical values collapse to one; duplicates that
disagree are all rejected, because neither can be trusted over the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from extract import jsonnum
from extract.records import Candle, Reject
from extract.windows import GRANULARITY_S, Window, from_unix

FIELDS = ("time", "low", "high", "open", "close", "volume")
SCALE = Decimal("1e-12")  # the raw table's DECIMAL(x,12)
PRICE_LIMIT = Decimal(10) ** 18  # DECIMAL(30,12): 18 integer digits
VOLUME_LIMIT = Decimal(10) ** 24  # DECIMAL(36,12): 24 integer digits


class CandleError(ValueError):
    """One element of an answer is not a valid candle; the message is the stored reason."""


@dataclass
class WindowCandles:
    candles: list[Candle] = field(default_factory=list)  # valid, inside the window, oldest first
    rejects: list[Reject] = field(default_factory=list)
    outside: int = 0  # well-formed elements outside the window, dropped as the API documents
    duplicates: int = 0  # identical repeats of an hour, collapsed

    @property
    def received(self) -> int:
        """Candles received inside the window (valid or not)."""
        return len(self.candles) + len(self.rejects)


def _number(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise CandleError(f"{name} is not a number: {jsonnum.dumps(value)}")
    if isinstance(value, float):  # only NaN/Infinity get here: the parser reads every other float as Decimal
        if not math.isfinite(value):
            raise CandleError(f"{name} is not a finite number: {value}")
        value = Decimal(repr(value))
    number = Decimal(value)
    if not number.is_finite():
        raise CandleError(f"{name} is not a finite number: {number}")
    return number


def _bucket_time(value: object) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CandleError(f"time is not an integer UNIX second: {jsonnum.dumps(value)}")
    if value % GRANULARITY_S:
        raise CandleError(f"time {value} is not aligned to an hour")
    try:
        return from_unix(value)
    except (OverflowError, OSError, ValueError) as exc:
        raise CandleError(f"time {value} is not a representable date") from exc


def _fit(name: str, value: Decimal, limit: Decimal) -> Decimal:
    if abs(value) >= limit:
        raise CandleError(f"{name} {value} does not fit the raw table (at most {len(str(limit)) - 1} integer digits)")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -12:
        return value  # stored exactly as it is; kept short, as the loader sends it as text
    with localcontext() as ctx:
        ctx.prec = 60  # quantize needs room for 24 integer + 12 decimal digits
        # rounded as the DECIMAL(x,12) column would round it, so a re-run compares equal to what is stored
        return value.quantize(SCALE, rounding=ROUND_HALF_UP)


def parse_candle(product_id: str, element: object) -> Candle:
    """One ``[time, low, high, open, close, volume]`` element, or ``CandleError`` naming the broken rule."""
    if not isinstance(element, list) or len(element) != len(FIELDS):
        size = f"{len(element)} fields" if isinstance(element, list) else type(element).__name__
        raise CandleError(f"expected an array of 6 numbers [time, low, high, open, close, volume], got {size}")
    bucket_start = _bucket_time(element[0])
    low, high, open_, close, volume = (_number(name, v) for name, v in zip(FIELDS[1:], element[1:], strict=True))
    if low <= 0:
        raise CandleError(f"low {low} is not a positive price")
    if low > min(open_, close):
        raise CandleError(f"low {low} is above min(open, close) {min(open_, close)}")
    if high < max(open_, close):
        raise CandleError(f"high {high} is below max(open, close) {max(open_, close)}")
    if volume < 0:
        raise CandleError(f"volume {volume} is negative")
    return Candle(
        product_id=product_id,
        bucket_start=bucket_start,
        open=_fit("open", open_, PRICE_LIMIT),
        high=_fit("high", high, PRICE_LIMIT),
        low=_fit("low", low, PRICE_LIMIT),
        close=_fit("close", close, PRICE_LIMIT),
        volume=_fit("volume", volume, VOLUME_LIMIT),
    )


def _readable_time(element: object) -> datetime | None:
    try:
        return _bucket_time(element[0]) if isinstance(element, list) and element else None
    except CandleError:
        return None


def validate_window(product_id: str, window: Window, elements: Sequence[object]) -> WindowCandles:
    """Validate every element of one answer and keep exactly the window's hours, oldest first."""
    result = WindowCandles()
    by_hour: dict[datetime, list[tuple[Candle, object]]] = {}
    for element in elements:
        hour = _readable_time(element)
        if hour is not None and not window.contains(hour):
            result.outside += 1
            continue
        try:
            candle = parse_candle(product_id, element)
        except CandleError as exc:
            result.rejects.append(Reject(product_id, hour, jsonnum.dumps(element), str(exc)))
            continue
        by_hour.setdefault(candle.bucket_start, []).append((candle, element))

    for hour in sorted(by_hour):
        copies = by_hour[hour]
        if len({candle for candle, _ in copies}) == 1:
            result.candles.append(copies[0][0])
            result.duplicates += len(copies) - 1
            continue
        reason = f"{len(copies)} conflicting candles for the same hour"
        result.rejects.extend(Reject(product_id, hour, jsonnum.dumps(element), reason) for _, element in copies)
    return result
