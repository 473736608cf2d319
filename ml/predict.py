"""Hourly batch inference with the production model.

The caller names the *feature hour*: the newest closed candle's bucket start (in Airflow, the data
interval's start). The forecast is for the next hour, ``target_hour = feature_hour + 1h``. A missing
row, a row flagged incomplete, or any row other than the requested hour is refused with an error that
names product and hour, and nothing is written: never a silent forecast from an older row.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from candlecast.settings import Schemas
from ml.metrics import to_prices
from ml.store import LoadedModel, ModelStore
from ml.train import naive_utc

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)


class PredictionError(RuntimeError):
    pass


class StaleFeatures(PredictionError):
    """The feature row for the requested hour is missing or incomplete."""


class ModelCache:
    """Loaded models by (store, version): a version is immutable, so it never needs invalidating."""

    def __init__(self, max_size: int = 8) -> None:
        self._items: dict[tuple[str, str], LoadedModel] = {}
        self._lock = threading.Lock()
        self.max_size = max_size

    def get(self, store: ModelStore, version: str) -> LoadedModel:
        key = (str(store.root.resolve()), version)
        with self._lock:
            hit = self._items.get(key)
        if hit is not None:
            return hit
        loaded = store.load(version)
        with self._lock:
            if len(self._items) >= self.max_size:
                self._items.pop(next(iter(self._items)))
            self._items[key] = loaded
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


DEFAULT_CACHE = ModelCache()


@dataclass(frozen=True)
class Prediction:
    product_id: str
    feature_hour: datetime
    target_hour: datetime
    model_version: str
    predicted_close: float
    lower_80: float
    upper_80: float

    def as_row(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "target_hour": self.target_hour, "model_version": self.model_version,
                "predicted_close": round(self.predicted_close, 12), "lower_80": round(self.lower_80, 12),
                "upper_80": round(self.upper_80, 12), "feature_hour": self.feature_hour}


def _hour(value: datetime, what: str) -> datetime:
    value = naive_utc(value)
    if value.minute or value.second or value.microsecond:
        raise PredictionError(f"{what} {value} is not on the hour")
    return value


def production_model(engine: Engine, schemas: Schemas, store: ModelStore, product: str,
                     cache: ModelCache | None = None) -> LoadedModel:
    from ml.registry import production_version

    try:
        version = production_version(engine, schemas, product)
    except Exception as exc:
        raise PredictionError(f"{product}: cannot read the model registry in {schemas.ml}: {exc}") from exc
    if version is None:
        raise PredictionError(f"{product}: no production model in {schemas.ml}.model_registry; "
                              "run `python -m ml promote` first")
    return (cache or DEFAULT_CACHE).get(store, version)


def check_rows(frame: pd.DataFrame, product: str, hours: list[datetime]) -> None:
    """Every requested hour present exactly once and complete, else StaleFeatures naming them."""
    import pandas as pd

    present = {pd.Timestamp(h).to_pydatetime(): bool(c) for h, c in zip(frame["hour"], frame["is_complete"],
                                                                           strict=True)}
    missing = [h for h in hours if h not in present]
    incomplete = [h for h in hours if present.get(h) is False]
    extra = sorted(set(present) - set(hours))
    problems = []
    if missing:
        problems.append(f"no feature row for {_hours_text(missing)}")
    if incomplete:
        problems.append(f"feature row not complete (a window lacks history or holds a missing hour) for "
                        f"{_hours_text(incomplete)}")
    if extra:
        problems.append(f"unexpected rows for {_hours_text(extra)}")
    if problems:
        raise StaleFeatures(f"{product}: " + "; ".join(problems) + "; nothing written")


def _hours_text(hours: list[datetime]) -> str:
    shown = ", ".join(f"{h:%Y-%m-%d %H:%M}" for h in hours[:5])
    more = f" and {len(hours) - 5} more" if len(hours) > 5 else ""
    return f"{shown}{more} UTC"


def forecast_rows(model: LoadedModel, frame: pd.DataFrame, product: str) -> list[Prediction]:
    fc = model.forecaster.predict(frame)
    pred, lo, hi = to_prices(frame["close"], fc.point, fc.lower, fc.upper)
    out = []
    for i, hour in enumerate(frame["hour"]):
        h = hour.to_pydatetime()
        if not (pred[i] > 0 and lo[i] > 0 and hi[i] > 0):
            raise PredictionError(f"{product}: model {model.version} gave a non-finite forecast for {h:%Y-%m-%d %H:%M}")
        out.append(Prediction(product, h, h + HOUR, model.version, float(pred[i]), float(lo[i]), float(hi[i])))
    return out


def predict_range(engine: Engine, schemas: Schemas, store: ModelStore, product: str, start: datetime,
                  end: datetime, cache: ModelCache | None = None) -> list[Prediction]:
    """Forecast from every feature hour in [start, end) with the production model and upsert them all.

    Every hour is checked before anything is written; the writes are one transaction.
    """
    from ml.features import read_features
    from ml.registry import ensure_ml_tables, upsert_predictions

    start, end = _hour(start, "start hour"), _hour(end, "end hour")
    if end <= start:
        raise PredictionError(f"{product}: empty range {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC")
    model = production_model(engine, schemas, store, product, cache)
    columns = list(model.forecaster.features)
    frame = read_features(engine, schemas, product, start=start, end=end, columns=columns)
    hours = [start + i * HOUR for i in range(int((end - start) / HOUR))]
    check_rows(frame, product, hours)
    predictions = forecast_rows(model, frame, product)
    ensure_ml_tables(engine, schemas)
    with engine.begin() as conn:
        upsert_predictions(conn, schemas, [p.as_row() for p in predictions])
    log.info("%s: wrote %d predictions with %s", product, len(predictions), model.version)
    return predictions


def predict_hour(engine: Engine, schemas: Schemas, store: ModelStore, product: str, feature_hour: datetime,
                 cache: ModelCache | None = None) -> Prediction:
    """Forecast ``feature_hour + 1h`` from the feature row of ``feature_hour`` and upsert it."""
    feature_hour = _hour(feature_hour, "feature hour")
    return predict_range(engine, schemas, store, product, feature_hour, feature_hour + HOUR, cache)[0]
