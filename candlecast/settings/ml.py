"""Settings of the ML layer: the model store, the default product, LightGBM threads, the holdout."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from candlecast.inputs import product_id
from candlecast.settings.base import DEFAULT_LOCAL_DIR, EnvSettings, default_under_local_dir
from candlecast.settings.extract import DEFAULT_PRODUCT


class MlSettings(EnvSettings):
    """``CANDLECAST_MODEL_STORE`` (default ``$CANDLECAST_LOCAL_DIR/models``), ``CANDLECAST_PRODUCT``,
    ``CANDLECAST_ML_THREADS``, ``CANDLECAST_HOLDOUT_HOURS``, ``CANDLECAST_PROMOTION_LIVE_HOURS``,
    ``CANDLECAST_PROMOTION_MIN_LIVE_HOURS``, ``CANDLECAST_SHADOW_RETRAINS``, ``CANDLECAST_ML_WORKERS``,
    ``CANDLECAST_DEMO_BACKTEST_WEEKS``."""

    store_dir: Path = Field(validation_alias="CANDLECAST_MODEL_STORE")
    product: str = Field(DEFAULT_PRODUCT, validation_alias="CANDLECAST_PRODUCT")
    # LightGBM threads, pinned. One by default: on a small shared box (MariaDB, Airflow, dbt beside it) OpenMP
    # threads that wait for each other at every split slowed a 3 s fit to minutes; one thread never waits.
    num_threads: int = Field(1, validation_alias="CANDLECAST_ML_THREADS")
    # Hours of the most recent data held out from training so that every model can be compared on it.
    holdout_hours: int = Field(168, validation_alias="CANDLECAST_HOLDOUT_HOURS")
    # Promotion's live record (ml.promote): the trailing window of realized forecasts, and the fewest hours of it
    # with a fair record (every model with a record forecast each) for it to count beside the holdout.
    promotion_live_hours: int = Field(672, validation_alias="CANDLECAST_PROMOTION_LIVE_HOURS")
    promotion_min_live_hours: int = Field(168, validation_alias="CANDLECAST_PROMOTION_MIN_LIVE_HOURS")
    # Candidates of the newest this many training cutoffs keep forecasting in the shadow of production; older
    # ones are archived at promotion, so the shadows of each hour stay bounded.
    shadow_retrains: int = Field(4, validation_alias="CANDLECAST_SHADOW_RETRAINS")
    # Processes the cycle runs each ML step in (predict, train, evaluate, promote), each with a share of the products:
    # the per-product work is CPU-bound Python, so a second core halves it once there are many products.
    step_workers: int = Field(2, validation_alias="CANDLECAST_ML_WORKERS")
    # Length of the demo's backtest (`make backtest` runs 52 weeks).
    demo_backtest_weeks: int = Field(8, validation_alias="CANDLECAST_DEMO_BACKTEST_WEEKS")
    # Only to place the default model store.
    local_dir: Path = Field(DEFAULT_LOCAL_DIR, validation_alias="CANDLECAST_LOCAL_DIR", exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _store_under_local_dir(cls, data: Any) -> Any:
        return default_under_local_dir(data, "CANDLECAST_MODEL_STORE", "store_dir", "models")

    @field_validator("product")
    @classmethod
    def _product_id(cls, value: str) -> str:
        return product_id(value)  # it names model folders and backtest files: Coinbase's shape only

    @field_validator("num_threads")
    @classmethod
    def _threads(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0 (0: LightGBM's own default)")
        return value

    @field_validator("holdout_hours", "demo_backtest_weeks", "promotion_live_hours", "promotion_min_live_hours",
                     "shadow_retrains", "step_workers")
    @classmethod
    def _hours(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @property
    def backtest_dir(self) -> Path:
        return self.store_dir.parent / "backtest"


def ml_settings(env: Mapping[str, str] | None = None) -> MlSettings:
    return MlSettings.from_env(env)
