"""The offline replay server: Coinbase's candles API over a recorded CSV (see ``server``)."""

from extract.replay.data import BUNDLED_CSV, CandleSeries, bundled_series, read_csv
from extract.replay.faults import Fault
from extract.replay.server import ReplayServer

__all__ = ["BUNDLED_CSV", "CandleSeries", "Fault", "ReplayServer", "bundled_series", "read_csv"]
