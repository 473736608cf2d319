"""Optional API keys (``CANDLECAST_API_KEYS``): with none configured every request is let in; with some, a
request must carry one, as ``X-API-Key: KEY``, ``Authorization: Bearer KEY`` or HTTP Basic with the key as the
password (what a browser sends after its own login prompt, for the dashboard).

Keys are compared in constant time (``hmac.compare_digest``, against every key, whatever matches first) and never
written to a response or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from starlette.requests import Request

from serve.errors import ApiError


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if scheme.lower() == "basic" and credentials.strip():
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def key_is_valid(presented: str, keys: Sequence[str]) -> bool:
    given = presented.encode("utf-8")
    matched = False
    for key in keys:
        # No early exit: the time taken does not tell which key (or how much of one) matched.
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    return matched


def require_key(request: Request, keys: Sequence[str]) -> None:
    """Raises 401 unless ``keys`` is empty or the request carries one of them."""
    if not keys:
        return
    presented = presented_key(request)
    if presented is None or not key_is_valid(presented, keys):
        raise ApiError(
            401, "unauthorized",
            "an API key is required: send it as X-API-Key, Authorization: Bearer, or as the Basic password"
            if presented is None else "the API key is not valid",
            headers={"WWW-Authenticate": 'Bearer, Basic realm="candlecast"'},
        )
