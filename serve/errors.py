"""Errors as JSON bodies that name what went wrong and where: ``{"error": {"status", "code", "message",
"parameter"}}``. Database faults become 503 with a body saying so, never a traceback, never a secret."""

from __future__ import annotations

import logging
from typing import Any

from serve.encoding import dumps

log = logging.getLogger("serve")

# How long a client should wait before asking again after a 503.
RETRY_AFTER_S = 5


class ApiError(Exception):
    """An answer other than 2xx: status, a stable code, a message for people, the parameter at fault."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter
        self.headers = headers or {}

    def body(self) -> bytes:
        error: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.parameter is not None:
            error["parameter"] = self.parameter
        return dumps({"error": error})


def bad_parameter(parameter: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, "bad_parameter", f"{parameter}: {message}", parameter=parameter)


def unknown_product(product: str) -> ApiError:
    return ApiError(404, "unknown_product", f"no product {product!r} in the feature mart", parameter="product_id")


NO_SUCH_TABLE = 1146  # MariaDB's ER_NO_SUCH_TABLE


def is_missing_table(exc: BaseException) -> bool:
    """A mart table that does not exist (dbt has not built it on this base yet)."""
    orig = getattr(exc, "orig", None) or exc
    args = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] == NO_SUCH_TABLE


# Server error codes that mean "cannot serve now", not "the query is wrong": too many connections, access
# denied (a rotated password), shutdown in progress, connection killed. The client's own codes (2000-2999:
# cannot connect, server gone away, connection lost) all mean the same.
UNAVAILABLE_CODES = frozenset({1040, 1044, 1045, 1053, 1927})


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or will not serve: a 503 and retry, not a bug (an unknown column is one)."""
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", None) or exc
    args = tuple(getattr(orig, "args", ()))
    if not args or not isinstance(args[0], int):
        # PyMySQL's own connection failures without a server code (e.g. the socket closed mid-read)
        return type(orig).__name__ in ("InterfaceError", "OperationalError")
    # 0: PyMySQL's InterfaceError on a connection it already found closed
    return args[0] in UNAVAILABLE_CODES or args[0] == 0 or 2000 <= args[0] < 3000


def database_unavailable(where: str, exc: BaseException) -> ApiError:
    """A 503 naming the server (``user@host:port``, no password) and the driver's reason."""
    orig = getattr(exc, "orig", None) or exc
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    # PyMySQL's errors are (code, message); the message names a host and a user, never a password.
    reason = f"{args[0]}: {args[1]}" if len(args) >= 2 else (str(orig) or type(orig).__name__)
    if is_missing_table(exc):
        message = f"the marts are not built yet on {where}: {reason}"
    else:
        message = f"the database is unavailable ({where}): {reason}; retry later"
    log.warning("503: %s", message)
    return ApiError(503, "database_unavailable", message, headers={"Retry-After": str(RETRY_AFTER_S)})
