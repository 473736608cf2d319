"""Synthetic products for the replay server: seeded hourly random walks beside the real BTC-USD sample.

Each product (``SYN001-USD``, ``SYN002-USD``, ...) is a deterministic function of the seed and its number: a
start price spread log-uniformly over $0.50..$50,000, an hourly volatility of 0.4-1.5% that wanders (a
log-AR(1) around it, so calm and busy weeks alternate), Student-t returns (fat tails, as crypto has),
highs and lows beyond the open-close body by a fraction of the hour's volatility, and a volume with a
daily cycle that rises with the size of the move. About one hour in ``1 / gap_rate`` is not published at all
(the API's "no ticks, no candle"), never the first. Prices carry the decimals their size calls for (2 above
$100, 4 above $1, 6 below), volumes 8, like the API's.

Values are computed with numpy when a product is made and formatted only when a candle is served, so 250
products of 12 weeks cost a few tens of MB, not the gigabytes a tuple of strings per candle would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

from tools.replay.data import CandleSeries, bundled_series
from tools.replay.timeline import Row

if TYPE_CHECKING:
    import numpy as np

HOUR_S = 3600
DEFAULT_SEED = 14
DEFAULT_HOURS = 12 * 7 * 24  # 12 weeks: the warm-up, a training set, its validation month and a holdout week
DEFAULT_GAP_RATE = 1 / 2000


def synthetic_id(number: int) -> str:
    """``SYN001-USD`` ...: a product id of Coinbase's shape that no real product has."""
    if not 1 <= number <= 999_999:
        raise ValueError(f"synthetic product number {number} is outside 1..999999")
    return f"SYN{number:03d}-USD"


class _FormattedRows(Sequence[Row]):
    """The candles' (low, high, open, close, volume) as the API's text, made when one is read."""

    def __init__(self, values: np.ndarray, price_places: int) -> None:
        self._values = values  # shape (n, 5): low, high, open, close, volume
        self._places = price_places

    def __len__(self) -> int:
        return int(self._values.shape[0])

    def _row(self, i: int) -> Row:
        low, high, open_, close, volume = self._values[i].tolist()
        p = self._places
        return (f"{low:.{p}f}", f"{high:.{p}f}", f"{open_:.{p}f}", f"{close:.{p}f}", f"{volume:.8f}")

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | Sequence[Row]:
        if isinstance(index, slice):
            return [self._row(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._row(index)

    def __iter__(self) -> Iterator[Row]:
        return (self._row(i) for i in range(len(self)))


def _price_places(price: float) -> int:
    return 2 if price >= 100 else 4 if price >= 1 else 6


def synthetic_series(product_id: str, number: int, first: int, hours: int, seed: int = DEFAULT_SEED,
                     gap_rate: float = DEFAULT_GAP_RATE) -> CandleSeries:
    """One product's candles for the hours ``first, first + 1h, ...`` (``hours`` of them, UNIX seconds),
    deterministic in ``seed`` and ``number``."""
    import numpy as np

    if first % HOUR_S:
        raise ValueError(f"first hour {first} is not on the hour")
    rng = np.random.default_rng([seed, number])
    start_price = float(np.exp(rng.uniform(np.log(0.5), np.log(50_000.0))))
    base_vol = rng.uniform(0.004, 0.015)
    # log-volatility: AR(1) with a few weeks' memory, so volatility clusters
    shocks = rng.normal(0.0, 0.08, hours)
    log_vol = np.empty(hours)
    level = 0.0
    for i in range(hours):
        level = 0.995 * level + shocks[i]
        log_vol[i] = level
    vol = base_vol * np.exp(log_vol - log_vol.mean())
    returns = vol * rng.standard_t(4, hours) / np.sqrt(2.0)  # t(4) has variance 2
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([start_price], close[:-1]))
    body_high, body_low = np.maximum(open_, close), np.minimum(open_, close)
    high = body_high * np.exp(np.abs(rng.normal(0.0, 0.5, hours)) * vol)
    low = body_low * np.exp(-np.abs(rng.normal(0.0, 0.5, hours)) * vol)
    hour_of_day = (first // HOUR_S + np.arange(hours)) % 24
    daily = 1.0 + 0.4 * np.sin(2 * np.pi * (hour_of_day - 9) / 24)
    base_volume = 2e6 / start_price  # a similar dollar volume across products
    volume = base_volume * daily * np.exp(rng.normal(0.0, 0.4, hours)) * (1.0 + np.abs(returns) / vol)
    places = _price_places(float(np.median(close)))
    # rounding is monotonic: rounded lows and highs still bound the rounded open and close
    values = np.column_stack([np.round(np.column_stack([low, high, open_, close]), places), np.round(volume, 8)])
    values[:, 0] = np.minimum(values[:, 0], np.minimum(values[:, 2], values[:, 3]))
    values[:, 1] = np.maximum(values[:, 1], np.maximum(values[:, 2], values[:, 3]))
    values[:, 0] = np.maximum(values[:, 0], 10.0 ** -places)  # never a zero price
    published = rng.random(hours) >= gap_rate
    published[0] = True
    times = tuple(int(t) for t in first + HOUR_S * np.nonzero(published)[0])
    return CandleSeries(product_id, times, _FormattedRows(values[published], places))


def synthetic_products(count: int, first: int | None = None, hours: int = DEFAULT_HOURS, seed: int = DEFAULT_SEED,
                       gap_rate: float = DEFAULT_GAP_RATE) -> dict[str, CandleSeries]:
    """``count`` synthetic products by id, ending where the bundled BTC-USD sample ends unless ``first`` is given,
    so they replay on the same clock as the real sample."""
    if first is None:
        bundled_end = bundled_series().times[-1]
        first = bundled_end + HOUR_S - hours * HOUR_S
    return {synthetic_id(n): synthetic_series(synthetic_id(n), n, first, hours, seed, gap_rate)
            for n in range(1, count + 1)}


def with_synthetic(count: int, hours: int = DEFAULT_HOURS, seed: int = DEFAULT_SEED,
                   gap_rate: float = DEFAULT_GAP_RATE) -> dict[str, CandleSeries]:
    """What the replay server serves with ``count`` synthetic products: the real BTC-USD sample and them."""
    bundled = bundled_series()
    return {bundled.product_id: bundled, **synthetic_products(count, None, hours, seed, gap_rate)}
