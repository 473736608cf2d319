"""The offline replay server: Coinbase's candles API over a recorded CSV (see ``server``), with a settable
clock and scheduled faults and candle events (``clock``, ``timeline``, ``faults``)."""

from tools.replay.clock import ReplayClock
from tools.replay.data import BUNDLED_CSV, CandleSeries, bundled_series, read_csv
from tools.replay.faults import Fault
from tools.replay.server import ReplayServer
from tools.replay.synthetic import synthetic_id, synthetic_products, with_synthetic
from tools.replay.timeline import CorrectedCandle, LateCandle, MissingCandle

__all__ = [
    "BUNDLED_CSV",
    "CandleSeries",
    "CorrectedCandle",
    "Fault",
    "LateCandle",
    "MissingCandle",
    "ReplayClock",
    "ReplayServer",
    "bundled_series",
    "read_csv",
    "synthetic_id",
    "synthetic_products",
    "with_synthetic",
]
