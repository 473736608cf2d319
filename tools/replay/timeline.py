"""What the API has published at a clock time: closed hours, the open hour so far, late and corrected candles.

With the clock at ``now``, an hour ``[t, t + 1h)`` is
- closed when ``t + 1h <= now``: its recorded candle is served (or its correction, from the correction's time);
- open when ``t < now < t + 1h``: served with the values so far (``partial_values``), as Coinbase serves the
  current bucket; at exactly ``t`` no trade has happened yet, so there is no candle;
- in the future otherwise, and not served.
Events change that for single candles: ``LateCandle`` (published N minutes after its hour closes, absent
until then, open hour included), ``MissingCandle`` (never published), ``CorrectedCandle`` (other values from
a clock time on). The rules are pure functions of the recorded row and the clock, so every answer repeats.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal

from tools.replay.clock import HOUR_S, Moment, iso, to_hour, to_unix

Row = tuple[str, str, str, str, str]  # low, high, open, close, volume, as the CSV has them


@dataclass(frozen=True)
class LateCandle:
    """The candle of ``hour`` appears ``minutes`` after its hour closes (absent before, even while open)."""

    hour: int
    minutes: float
    product_id: str | None = None

    def __init__(self, hour: Moment, minutes: float, product_id: str | None = None) -> None:
        if minutes < 0:
            raise ValueError(f"a late candle cannot appear before its hour closes ({minutes} minutes)")
        object.__setattr__(self, "hour", to_hour(hour))
        object.__setattr__(self, "minutes", minutes)
        object.__setattr__(self, "product_id", product_id)

    @property
    def appears_at(self) -> int:
        return self.hour + HOUR_S + round(self.minutes * 60)


@dataclass(frozen=True)
class MissingCandle:
    """The API never publishes ``hour`` (no ticks, as far as anyone will ever know)."""

    hour: int
    product_id: str | None = None

    def __init__(self, hour: Moment, product_id: str | None = None) -> None:
        object.__setattr__(self, "hour", to_hour(hour))
        object.__setattr__(self, "product_id", product_id)


@dataclass(frozen=True)
class CorrectedCandle:
    """From clock time ``at`` on, ``hour`` is served with ``values`` (low, high, open, close, volume);
    ``None`` derives valid other values from the recorded ones (``corrected_values``)."""

    hour: int
    at: int
    values: Row | None = None
    product_id: str | None = None

    def __init__(self, hour: Moment, at: Moment, values: Row | None = None, product_id: str | None = None) -> None:
        hour_s, at_s = to_hour(hour), to_unix(at)
        if at_s < hour_s + HOUR_S:
            raise ValueError(f"a correction of {iso(hour_s)} must come after the hour closes, not at {iso(at_s)}")
        if values is not None:
            low, high, open_, close, volume = map(Decimal, values)
            if not (0 < low <= min(open_, close) and high >= max(open_, close) and volume >= 0):
                raise ValueError(f"corrected values for {iso(hour_s)} break the candle rules: {values}")
        object.__setattr__(self, "hour", hour_s)
        object.__setattr__(self, "at", at_s)
        object.__setattr__(self, "values", None if values is None else tuple(str(v) for v in values))
        object.__setattr__(self, "product_id", product_id)


Event = LateCandle | MissingCandle | CorrectedCandle


def _places(text: str, minimum: int) -> int:
    """Decimal places of a recorded value (the partial values keep the recording's precision)."""
    exponent = Decimal(text).as_tuple().exponent
    return max(minimum, -exponent if isinstance(exponent, int) and exponent < 0 else 0)


def _fmt(value: Decimal, places: int) -> str:
    return format(value.quantize(Decimal(1).scaleb(-places)), "f")


def partial_values(row: Row, fraction: float) -> Row:
    """The open hour's candle when ``fraction`` of it has passed (0 < fraction < 1).

    The open is the final open; the close has moved that fraction of the way from the open to the final
    close; high and low have stretched the same fraction of the way from the open-close body to the final
    extremes (so they never pass them); volume is that fraction of the final volume.
    """
    low, high, open_, close, volume = map(Decimal, row)
    part = Decimal(str(fraction))
    close_p = open_ + (close - open_) * part
    high_p = max(open_, close_p) + (high - max(open_, close)) * part
    low_p = min(open_, close_p) - (min(open_, close) - low) * part
    price_places = max(_places(v, 2) for v in row[:4])
    return (
        _fmt(low_p, price_places),
        _fmt(high_p, price_places),
        row[2],
        _fmt(close_p, price_places),
        _fmt(volume * part, _places(row[4], 8)),
    )


def corrected_values(row: Row) -> Row:
    """A plausible correction: the close moved halfway to the high (or the low, if it closed at the high)
    and 5% more volume; the result still obeys low <= open, close <= high."""
    low, high, _, close, volume = map(Decimal, row)
    target = high if close < high else low
    price_places = max(_places(v, 2) for v in row[:4])
    new_close = _fmt((close + target) / 2, price_places)
    return (row[0], row[1], row[2], new_close, _fmt(volume * Decimal("1.05"), _places(row[4], 8)))


class Timeline:
    """The events scheduled on the server (thread-safe), and the one rule that applies them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._late: dict[tuple[str | None, int], LateCandle] = {}
        self._missing: set[tuple[str | None, int]] = set()
        self._corrections: dict[tuple[str | None, int], list[CorrectedCandle]] = {}

    def add(self, *events: Event) -> None:
        with self._lock:
            for event in events:
                key = (event.product_id, event.hour)
                if isinstance(event, LateCandle):
                    self._late[key] = event
                elif isinstance(event, MissingCandle):
                    self._missing.add(key)
                elif isinstance(event, CorrectedCandle):
                    self._corrections.setdefault(key, []).append(event)
                    self._corrections[key].sort(key=lambda c: c.at)
                else:
                    raise TypeError(f"not a timeline event: {event!r}")

    def clear(self) -> None:
        with self._lock:
            self._late.clear()
            self._missing.clear()
            self._corrections.clear()

    def published(self, product_id: str, hour: int, row: Row, now: int | None) -> Row | None:
        """The values of ``hour`` the API serves at ``now`` (``None``: not published); ``now=None``: the
        recording as it is, whatever is scheduled."""
        if now is None:
            return row
        if now <= hour:
            return None
        keys = ((product_id, hour), (None, hour))
        with self._lock:
            if any(key in self._missing for key in keys):
                return None
            late = next((self._late[k] for k in keys if k in self._late), None)
            if late is not None and now < late.appears_at:
                return None
            corrections = [c for k in keys for c in self._corrections.get(k, ()) if c.at <= now]
        if corrections:
            newest = max(corrections, key=lambda c: c.at)
            row = newest.values if newest.values is not None else corrected_values(row)
        if now < hour + HOUR_S:
            return partial_values(row, (now - hour) / HOUR_S)
        return row
