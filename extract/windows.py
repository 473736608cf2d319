"""Pure window arithmetic over UTC hours: alignment, the last closed hour, and request windows.

Ranges are half-open, ``[start, end)``, over bucket *starts*: the bucket starting at ``end`` is not part of
the range. The caller gives every time; nothing here reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from candlecast.hours import HOUR, floor_hour, to_utc

GRANULARITY_S = 3600
MAX_CANDLES_PER_REQUEST = 300  # Coinbase rejects (HTTP 400) a range that would return more


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == to_utc(moment) else floored + HOUR


def last_closed_end(now: datetime) -> datetime:
    """Exclusive end of the closed hours at ``now``: the bucket containing ``now`` is still open."""
    return floor_hour(now)


def clamp_end(end: datetime, now: datetime | None = None) -> datetime:
    """The range end aligned to the hour, never past the open hour when the caller says what ``now`` is."""
    aligned = floor_hour(end)
    if now is not None:
        aligned = min(aligned, last_closed_end(now))
    return aligned


def to_unix(moment: datetime) -> int:
    return int(to_utc(moment).timestamp())


def from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, order=True)
class Window:
    """Hours ``[start, end)``; both aligned to the hour, UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is None or value.utcoffset() != timedelta(0) or value != floor_hour(value):
                raise ValueError(f"window {name} must be an hour-aligned UTC datetime, got {value!r}")
        if self.end < self.start:
            raise ValueError(f"window end {self.end:%Y-%m-%d %H:%M} is before its start {self.start:%Y-%m-%d %H:%M}")

    @property
    def hours(self) -> int:
        return int((self.end - self.start) / HOUR)

    def hour_starts(self) -> Iterator[datetime]:
        for i in range(self.hours):
            yield self.start + i * HOUR

    def contains(self, bucket_start: datetime) -> bool:
        return self.start <= bucket_start < self.end

    def request_params(self) -> dict[str, str]:
        """Query parameters for this window.

        ``end`` is the *last* bucket start (the API treats ``end`` as inclusive), so the span is
        ``hours - 1`` granularities: under either reading of the 300 limit the request stays legal.
        """
        last = self.end - HOUR if self.hours else self.start
        return {
            "granularity": str(GRANULARITY_S),
            "start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": last.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def __str__(self) -> str:
        return f"[{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M}) UTC"


def hour_range(start: datetime, end: datetime) -> Window:
    """The hours from the one containing ``start`` up to (not including) the one containing ``end``."""
    first, stop = floor_hour(start), floor_hour(end)
    if stop < first:
        raise ValueError(f"range end {to_utc(end):%Y-%m-%d %H:%M} is before its start {to_utc(start):%Y-%m-%d %H:%M}")
    return Window(first, stop)


def split_windows(span: Window, max_candles: int = MAX_CANDLES_PER_REQUEST) -> list[Window]:
    """Consecutive, non-overlapping windows of at most ``max_candles`` hours, oldest first.

    Oldest first so that a failure leaves a contiguous stored prefix that an incremental run resumes from.
    """
    if max_candles < 1:
        raise ValueError(f"max_candles must be >= 1, got {max_candles}")
    windows = []
    cursor = span.start
    while cursor < span.end:
        stop = min(cursor + max_candles * HOUR, span.end)
        windows.append(Window(cursor, stop))
        cursor = stop
    return windows
