"""UTC hours: the project's one time module.

Every time in the project is UTC. In Python it is an aware UTC ``datetime``; in MariaDB a DATETIME holds the
same instant without tzinfo (``naive_utc``). A naive ``datetime`` is taken to be UTC already. Times on
command lines are ISO 8601, with or without an offset; without one they are UTC (``parse_time``).
Nothing here reads the clock: the caller says what time it is.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)


def to_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already (the project's convention)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def naive_utc(moment: datetime) -> datetime:
    """What a MariaDB DATETIME column holds: UTC without tzinfo."""
    if moment.tzinfo is UTC:  # the common case, and hot in the loader
        return moment.replace(tzinfo=None)
    return to_utc(moment).replace(tzinfo=None)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in, aware UTC.

    Also turns Airflow's pendulum datetimes into plain ``datetime``s, whose differences are ``timedelta``s.
    """
    moment = to_utc(moment)
    return datetime(moment.year, moment.month, moment.day, moment.hour, tzinfo=UTC)


def is_on_the_hour(moment: datetime) -> bool:
    return not (moment.minute or moment.second or moment.microsecond)


def parse_time(raw: str) -> datetime:
    """ISO 8601 (``2024-01-09``, ``2024-01-09T23:00``, ``...+02:00``, ``...Z``) as aware UTC; no offset means UTC.

    Raises ``ValueError`` saying what was expected.
    """
    text = raw.strip()
    try:
        return to_utc(datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {raw!r} (e.g. 2024-01-09T23:00, UTC unless an offset is given)")\
            from None


def cli_time(on_the_hour: bool = False) -> Callable[[str], datetime]:
    """An argparse ``type=``: ``parse_time``'s rule, with argparse naming the argument in the error."""

    def parse(raw: str) -> datetime:
        try:
            moment = parse_time(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if on_the_hour and not is_on_the_hour(moment):
            raise argparse.ArgumentTypeError(f"{raw!r} is not on the hour")
        return moment

    parse.__name__ = "time"
    return parse
