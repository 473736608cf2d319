"""Settings of the ML layer, read once from env vars at the edge and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from candlecast.settings import local_dir

DEFAULT_PRODUCT = "BTC-USD"


@dataclass(frozen=True)
class MlSettings:
    store_dir: Path
    product: str = DEFAULT_PRODUCT
    # LightGBM threads, pinned. One by default: on a small shared box (MariaDB, Airflow, dbt beside it) OpenMP
    # threads that wait for each other at every split slowed a 3 s fit to minutes; one thread never waits.
    num_threads: int = 1
    # Hours of the most recent data held out from training so that every model can be compared on it.
    holdout_hours: int = 168

    @property
    def backtest_dir(self) -> Path:
        return self.store_dir.parent / "backtest"


def ml_settings(env: Mapping[str, str] | None = None) -> MlSettings:
    """``CANDLECAST_MODEL_STORE`` (default ``$CANDLECAST_LOCAL_DIR/models``), ``CANDLECAST_PRODUCT``,
    ``CANDLECAST_ML_THREADS``, ``CANDLECAST_HOLDOUT_HOURS``."""
    values = os.environ if env is None else env
    store = values.get("CANDLECAST_MODEL_STORE") or str(local_dir(values) / "models")
    return MlSettings(
        store_dir=Path(store),
        product=values.get("CANDLECAST_PRODUCT", DEFAULT_PRODUCT),
        num_threads=int(values.get("CANDLECAST_ML_THREADS", "1")),
        holdout_hours=int(values.get("CANDLECAST_HOLDOUT_HOURS", "168")),
    )
