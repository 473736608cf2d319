"""The replay server's settable clock: what "now" is for the API it imitates.

Unset (the default), the server has no notion of time and serves every recorded candle, as it always did.
Set, it serves only what Coinbase would have published at that moment (see ``timeline``). The clock never
moves by itself: the caller sets or advances it (tests in-process, or ``POST /_replay/clock`` from outside).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

from candlecast.hours import parse_time

HOUR_S = 3600

Moment = datetime | int | str


def to_unix(moment: Moment) -> int:
    """UNIX seconds of an aware datetime (a naive one is UTC), an ``int``, or an ISO 8601 / digits string."""
    if isinstance(moment, bool):
        raise TypeError(f"not a time: {moment!r}")
    if isinstance(moment, int):
        return moment
    if isinstance(moment, str):
        text = moment.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        try:
            moment = parse_time(text)  # the rule of every CLI: ISO 8601, no offset means UTC
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 time or UNIX seconds: {text!r}") from exc
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())
    raise TypeError(f"not a time: {moment!r}")


def to_hour(moment: Moment) -> int:
    """``to_unix`` for a bucket start, which must be hour-aligned."""
    seconds = to_unix(moment)
    if seconds % HOUR_S:
        raise ValueError(f"{iso(seconds)} is not the start of an hour")
    return seconds


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ReplayClock:
    """Thread-safe "now" in UNIX seconds, or ``None`` for a server without time."""

    def __init__(self, now: Moment | None = None) -> None:
        self._lock = threading.Lock()
        self._now = None if now is None else to_unix(now)

    def now(self) -> int | None:
        with self._lock:
            return self._now

    def set(self, moment: Moment | None) -> int | None:
        with self._lock:
            self._now = None if moment is None else to_unix(moment)
            return self._now

    def advance(self, by: timedelta | float) -> int:
        seconds = by.total_seconds() if isinstance(by, timedelta) else by
        with self._lock:
            if self._now is None:
                raise RuntimeError("the replay clock is not set: set it before advancing it")
            self._now += int(seconds)
            return self._now
