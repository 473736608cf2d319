"""The offline replay server: Coinbase's candles API over a recorded CSV (see ``server``)."""

from tools.replay.data import BUNDLED_CSV, CandleSeries, bundled_series, read_csv
from tools.replay.faults import Fault
from tools.replay.server import ReplayServer

__all__ = ["BUNDLED_CSV", "CandleSeries", "Fault", "ReplayServer", "bundled_series", "read_csv"]
