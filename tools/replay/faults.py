"""Fault injection for the replay server: what a flaky API, proxy or network does to a client.

A fault fires on requests matching its product (any, by default), after letting ``skip`` of them through,
``times`` times; then it is spent. Faults fire in the order they were injected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["status", "slow", "garbage", "html", "truncated", "wrong_shape", "mutate", "action"]


@dataclass
class Fault:
    kind: FaultKind
    times: int = 1
    skip: int = 0
    product_id: str | None = None
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    mutate: Callable[[list[list[object]]], list[object]] | None = None
    action: Callable[[], None] | None = None

    @classmethod
    def error(cls, status: int = 503, times: int = 1, **kw: object) -> Fault:
        """An error status with the API's JSON body (``retry_after`` adds the header)."""
        return cls("status", status=status, times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1", times: int = 1, **kw: object) -> Fault:
        return cls("status", status=429, retry_after=retry_after, times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def slow(cls, delay_s: float, times: int = 1, **kw: object) -> Fault:
        """Answer correctly, but only after ``delay_s`` seconds (longer than the client's timeout, say)."""
        return cls("slow", delay_s=delay_s, times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def garbage(cls, times: int = 1, **kw: object) -> Fault:
        return cls("garbage", times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def html(cls, status: int = 200, times: int = 1, **kw: object) -> Fault:
        """A proxy's HTML page instead of JSON (status 200, or e.g. 502 from a gateway)."""
        return cls("html", status=status, times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def truncated(cls, times: int = 1, **kw: object) -> Fault:
        """The right answer cut in half (with a Content-Length that matches the cut body)."""
        return cls("truncated", times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def wrong_shape(cls, times: int = 1, **kw: object) -> Fault:
        """Valid JSON that is not an array of candles."""
        return cls("wrong_shape", times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def malformed_candles(cls, mutate: Callable[[list[list[object]]], list[object]], times: int = 1,
                          **kw: object) -> Fault:
        """The right answer passed through ``mutate`` (rows are ``[time, low, high, open, close, volume]``
        with ``int`` time and ``Decimal`` values, newest first) before it is sent."""
        return cls("mutate", mutate=mutate, times=times, **kw)  # type: ignore[arg-type]

    @classmethod
    def call(cls, action: Callable[[], None], times: int = 1, **kw: object) -> Fault:
        """Run ``action`` (kill a database, say) when the request arrives, then answer normally."""
        return cls("action", action=action, times=times, **kw)  # type: ignore[arg-type]


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

    def take(self, product_id: str | None) -> Fault | None:
        """The fault to apply to this request, if one is due; consumes one of its ``skip``/``times``."""
        with self._lock:
            for fault in self._faults:
                if fault.product_id is not None and fault.product_id != product_id:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
            return None
