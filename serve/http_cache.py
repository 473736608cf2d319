"""Cheap polling: every data answer carries an ETag (a hash of its body) and a Last-Modified (the newest hour
behind it); a request that already holds that version gets 304 and no body.

The ETag is exact: any change of any served value changes it, a late-healed forecast included (the gzipped
representation of a body has the same tag with ``-gz``; either matches). Last-Modified
is the newest hour's time as the marts record it, so ``If-None-Match`` is the header to poll with;
``If-Modified-Since`` is honoured only when no ``If-None-Match`` came (RFC 9110, 13.2.2).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

from candlecast.hours import to_utc

JSON = "application/json"
# Stored by clients and proxies, but asked again each time (with the validators): the data changes hourly.
CACHE_CONTROL = "no-cache"


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def gzip_etag(etag: str) -> str:
    """The ETag of the gzipped representation of the body tagged ``etag``: another representation, another tag."""
    return etag[:-1] + '-gz"'


def _matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    # Weak comparison (RFC 9110, 8.8.3.2): W/"x" matches "x". Either representation's tag names the same data.
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or gzip_etag(etag) in tags


def _not_modified_since(header: str, last_modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # an unreadable date is ignored, as RFC 9110 asks
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return to_utc(last_modified).replace(microsecond=0) <= since


def http_date(moment: datetime) -> str:
    return format_datetime(to_utc(moment).replace(microsecond=0), usegmt=True)


def accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def conditional(request: Request, body: bytes, last_modified: datetime | None, media_type: str = JSON,
                etag: str | None = None, gzipped: bytes | None = None, last_modified_header: str | None = None,
                ) -> Response:
    """200 with the body (gzipped when the client accepts it and ``gzipped`` is given) and its validators, or
    304 when the request's validators match them. ``etag`` and ``last_modified_header`` may come precomputed
    (a cached answer's)."""
    etag = etag or etag_of(body)
    compress = gzipped is not None and accepts_gzip(request)
    headers = {"ETag": gzip_etag(etag) if compress else etag, "Cache-Control": CACHE_CONTROL,
               "Vary": "Accept-Encoding"}
    if last_modified is not None:
        headers["Last-Modified"] = last_modified_header or http_date(last_modified)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        fresh = _matches(if_none_match, etag)
    else:
        since = request.headers.get("if-modified-since")
        fresh = since is not None and last_modified is not None and _not_modified_since(since, last_modified)
    if fresh:
        return Response(status_code=304, headers=headers)
    if compress:
        headers["Content-Encoding"] = "gzip"
        return Response(content=gzipped, media_type=media_type, headers=headers)
    return Response(content=body, media_type=media_type, headers=headers)
