"""Query parameters, checked at the edge: times, ranges, page sizes, field lists. Each failure names its
parameter (``bad_parameter``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from candlecast.hours import naive_utc, parse_time
from candlecast.inputs import PRODUCT_ID
from serve.errors import bad_parameter, unknown_product

# A range given by one end only reaches this far from it; given by neither, it is the newest week of data.
DEFAULT_SPAN = timedelta(days=7)


def product_param(value: str) -> str:
    """A path's product id; an id of the wrong shape cannot exist, so it is a 404 like an unknown one."""
    if not PRODUCT_ID.fullmatch(value):
        raise unknown_product(value)
    return value


def time_param(name: str, raw: str | None) -> datetime | None:
    """ISO 8601 (UTC unless an offset is given) as the naive UTC the marts hold; None when absent."""
    if raw is None or raw.strip() == "":
        return None
    try:
        return naive_utc(parse_time(raw))
    except ValueError as exc:
        raise bad_parameter(name, str(exc)) from None


def time_range(start_raw: str | None, end_raw: str | None, max_span: timedelta,
               newest_end: datetime | None) -> tuple[datetime, datetime]:
    """``[start, end)`` from the request: both ends, one (the other ``DEFAULT_SPAN`` away) or neither (the week
    ending at ``newest_end``, the hour after the newest row). Refuses end <= start and spans over ``max_span``."""
    start, end = time_param("start", start_raw), time_param("end", end_raw)
    if start is None and end is None:
        end = newest_end or naive_utc(datetime(1970, 1, 1))
        start = end - DEFAULT_SPAN
    elif start is None:
        assert end is not None
        start = end - DEFAULT_SPAN
    elif end is None:
        end = start + DEFAULT_SPAN
    if end <= start:
        raise bad_parameter("end", f"must be after start ({start:%Y-%m-%dT%H:%M}Z), got {end:%Y-%m-%dT%H:%M}Z")
    if end - start > max_span:
        days = max_span / timedelta(days=1)
        raise bad_parameter("end", f"the range {start:%Y-%m-%dT%H:%M}Z .. {end:%Y-%m-%dT%H:%M}Z is longer than "
                                   f"the maximum of {days:g} days (CANDLECAST_API_MAX_RANGE_DAYS); page through "
                                   "shorter ranges")
    return start, end


def limit_param(raw: str | None, default: int, maximum: int) -> int:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter("limit", f"must be a whole number from 1 to {maximum}, got {raw!r}", 422) from None
    if not 1 <= value <= maximum:
        raise bad_parameter("limit", f"must be from 1 to {maximum} (CANDLECAST_API_MAX_PAGE_SIZE), got {value}",
                            422)
    return value


def fields_param(raw: str | None, default: Sequence[str], columns: Sequence[str]) -> tuple[str, ...]:
    """``fields=a,b,c`` (the mart's own column names) or ``default``; an unknown name is refused by name."""
    if raw is None or raw.strip() == "":
        return tuple(default)
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in columns]
    if unknown:
        shown = ", ".join(repr(n[:64]) for n in unknown[:5])
        raise bad_parameter("fields", f"unknown field(s) {shown}; the feature mart's columns are "
                                      f"{', '.join(columns)}")
    if not names:
        raise bad_parameter("fields", "names no field")
    return names

