"""Fault injection for the replay server: what a flaky API, proxy or network does to a client.

A fault fires on requests matching its product (any, by default), after letting ``skip`` of them through,
``times`` times; then it is spent. When several are due, the one injected first fires. A fault with a clock range
(``from_clock``/``until_clock``, see ``clock``) only fires, and only counts requests, while the server's clock
is inside ``[from_clock, until_clock)``; ``times=None`` fires on every such request (an outage).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack

from tools.replay.clock import Moment, to_unix

FaultKind = Literal[
    "status", "slow", "hang", "garbage", "html", "truncated", "empty", "wrong_shape", "mutate", "action"
]


class Targeting(TypedDict, total=False):
    """Which requests a fault applies to (the options every factory below takes)."""

    skip: int
    product_id: str | None


class FaultOptions(Targeting, total=False):
    from_clock: Moment | None
    until_clock: Moment | None


@dataclass
class Fault:
    kind: FaultKind
    times: int | None = 1
    skip: int = 0
    product_id: str | None = None
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    mutate: Callable[[list[list[object]]], object] | None = None  # returns the body to send, as JSON
    action: Callable[[], None] | None = None
    from_clock: Moment | None = None
    until_clock: Moment | None = None

    def __post_init__(self) -> None:
        if self.from_clock is not None:
            self.from_clock = to_unix(self.from_clock)
        if self.until_clock is not None:
            self.until_clock = to_unix(self.until_clock)

    @property
    def scheduled(self) -> bool:
        return self.from_clock is not None or self.until_clock is not None

    def due_at(self, now: int | None) -> bool:
        """Inside its clock range (a fault without one is always due; one with a range never is without a clock)."""
        if not self.scheduled:
            return True
        if now is None:
            return False
        # to_unix: __post_init__ stored UNIX seconds already, this only tells the type checker so
        return (self.from_clock is None or now >= to_unix(self.from_clock)) and (
            self.until_clock is None or now < to_unix(self.until_clock)
        )

    @classmethod
    def error(cls, status: int = 503, times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """An error status with the API's JSON body (``retry_after`` adds the header)."""
        return cls("status", status=status, times=times, **kw)

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1", times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        return cls("status", status=429, retry_after=retry_after, times=times, **kw)

    @classmethod
    def slow(cls, delay_s: float, times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """Answer correctly, but only after ``delay_s`` seconds (longer than the client's timeout, say)."""
        return cls("slow", delay_s=delay_s, times=times, **kw)

    @classmethod
    def hang(cls, delay_s: float, times: int | None = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """Say nothing for ``delay_s`` seconds, then drop the connection: a timeout for any shorter client timeout."""
        return cls("hang", delay_s=delay_s, times=times, **kw)

    @classmethod
    def outage(cls, start: Moment, end: Moment, status: int = 503, hang_s: float | None = None,
               **kw: Unpack[Targeting]) -> Fault:
        """Every request while the clock is in ``[start, end)`` fails: ``status`` with the API's JSON error,
        or, with ``hang_s``, no answer at all (the client times out)."""
        if hang_s is not None:
            return cls("hang", delay_s=hang_s, times=None, from_clock=start, until_clock=end, **kw)
        return cls("status", status=status, times=None, from_clock=start, until_clock=end, **kw)

    @classmethod
    def garbage(cls, times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        return cls("garbage", times=times, **kw)

    @classmethod
    def html(cls, status: int = 200, times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """A proxy's HTML page instead of JSON (status 200, or e.g. 502 from a gateway)."""
        return cls("html", status=status, times=times, **kw)

    @classmethod
    def truncated(cls, times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """The right answer cut in half (with a Content-Length that matches the cut body)."""
        return cls("truncated", times=times, **kw)

    @classmethod
    def empty(cls, times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """HTTP 200 with an empty body (Content-Length: 0), as a flaky proxy or a dropped upstream sends."""
        return cls("empty", times=times, **kw)

    @classmethod
    def wrong_shape(cls, times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """Valid JSON that is not an array of candles."""
        return cls("wrong_shape", times=times, **kw)

    @classmethod
    def malformed_candles(cls, mutate: Callable[[list[list[object]]], object], times: int = 1,
                          **kw: Unpack[FaultOptions]) -> Fault:
        """The right answer passed through ``mutate`` (rows are ``[time, low, high, open, close, volume]``
        with ``int`` time and ``Decimal`` values, newest first) before it is sent."""
        return cls("mutate", mutate=mutate, times=times, **kw)

    @classmethod
    def call(cls, action: Callable[[], None], times: int = 1, **kw: Unpack[FaultOptions]) -> Fault:
        """Run ``action`` (kill a database, say) when the request arrives, then answer normally."""
        return cls("action", action=action, times=times, **kw)


class FaultPlan:
    """Thread-safe queue of pending faults."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._faults)

    def take(self, product_id: str | None, now: int | None = None) -> Fault | None:
        """The fault to apply to this request at clock ``now``, if one is due; consumes one of its
        ``skip``/``times``."""
        chosen: Fault | None = None
        with self._lock:
            # Every fault counts every request it matches towards its ``skip``, whether or not another fires
            # on it: "the 4th request" means the 4th, and one fault waiting its turn never hides another.
            for fault in self._faults:
                if fault.product_id is not None and fault.product_id != product_id:
                    continue
                if not fault.due_at(now):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                elif chosen is None:
                    chosen = fault
            if chosen is not None and chosen.times is not None:
                chosen.times -= 1
                if chosen.times <= 0:
                    self._faults.remove(chosen)
            return chosen
