"""A lazy-fill token bucket: ``rate`` tokens per second, at most ``burst`` banked.

The same model Coinbase documents for its public endpoints; the client spends a token per request and
the replay server refuses (429) a request when its own bucket is empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 tokens/s, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_acquire(self) -> tuple[bool, float]:
        """Take a token if one is there; otherwise say how long until one will be."""
        with self._lock:
            self._refill(self._clock())
            # A hair of tolerance: float rounding must not leave a caller sleeping 1e-17 s forever.
            if self._tokens >= 1.0 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1.0)
                return True, 0.0
            return False, (1.0 - self._tokens) / self.rate

    def acquire(self) -> float:
        """Block until a token is taken; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            ok, wait = self.try_acquire()
            if ok:
                return waited
            self._sleep(wait)
            waited += wait
