"""A short-lived in-process cache of answers (``CANDLECAST_API_CACHE_SECONDS``, default 5 s), per URL.

The marts change once an hour (the cycle's dbt build), so an answer read a few seconds ago is still the answer:
within the time to live, a URL is served from memory on the event loop, without a thread or a database round
trip, and when it expires one request reads the database while the others asking for the same URL wait for
that read (no stampede of identical queries). Errors (a bad parameter, an unknown product, the database down)
are never cached. The price: a change in the marts reaches consumers up to that many seconds late, and for that
long after the database goes away a cached URL is still answered. 0 turns it off.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from serve.http_cache import etag_of, http_date

# Bodies at least this long are also kept gzipped, for clients that accept it (a week of forecasts: 80 KB, 10 KB).
GZIP_FROM_BYTES = 1024


@dataclass(frozen=True)
class Answer:
    """A computed answer: its body (and gzipped, when long), its ETag and the time its data last changed.

    Compressed once when computed, so a cached answer costs no CPU per request to compress.
    """

    body: bytes
    last_modified: datetime | None
    etag: str = ""
    gzipped: bytes | None = None
    last_modified_header: str | None = None

    @classmethod
    def of(cls, body: bytes, last_modified: datetime | None) -> Answer:
        packed = gzip.compress(body, compresslevel=6, mtime=0) if len(body) >= GZIP_FROM_BYTES else None
        return cls(body, last_modified, etag_of(body), packed, http_date(last_modified) if last_modified else None)


class AnswerCache:
    def __init__(self, ttl_s: float, max_entries: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[Answer]] = {}

    def fresh(self, key: str) -> Answer | None:
        """The cached answer for ``key`` while it lives, else None (no waiting, no computing)."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] > self.clock() else None

    async def get(self, key: str, compute: Callable[[], Answer]) -> Answer:
        """The cached answer for ``key``, or ``compute()`` (blocking: run in a worker thread) stored for the TTL."""
        if self.ttl_s <= 0:
            return await run_in_threadpool(compute)
        cached = self.fresh(key)
        if cached is not None:
            return cached
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            answer = await run_in_threadpool(compute)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else was waiting
            raise
        finally:
            del self._in_flight[key]
        self._store(key, answer)
        future.set_result(answer)
        return answer

    def _store(self, key: str, answer: Answer) -> None:
        self._entries[key] = (self.clock() + self.ttl_s, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)  # the least recently stored
