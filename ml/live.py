"""A model's live record: its realized forecasts (served or shadow) over a trailing window, scored fairly.

Every registered model that is not archived forecasts every hour (``ml.predict``, shadow forecasts), so the models
that have been live for a while have real out-of-sample records on the same hours. ``live_record`` reads them
from ``{base}_ml.predictions`` with the realized closes from the feature mart (the ML layer's own table and dbt's
features: no loop through the accuracy marts), and applies the leaderboard's fairness rule: a model has a live
record only when it has a realized forecast on *every* hour of the window that has any, so every model with a
record is scored on exactly the same hours; persistence's MAE on those hours (next close = this close, from the
closes themselves) is the reference, so persistence always competes. ``ml.promote`` uses it beside the holdout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from candlecast.hours import HOUR, naive_utc
from candlecast.settings import Schemas

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class LiveForecast:
    """One realized forecast: the model's error and persistence's on the same hour."""

    model_version: str
    target_hour: datetime
    abs_error: float
    persistence_abs_error: float


@dataclass(frozen=True)
class LiveRecord:
    """The trailing window ``[start, end)`` of target hours, the hours with a realized forecast, and per model
    with a forecast on every one of them its MAE; persistence's MAE on the same hours."""

    start: datetime
    end: datetime
    hours: int  # hours of the window with at least one realized forecast
    mae: dict[str, float] = field(default_factory=dict)  # models with a forecast on every one of those hours
    persistence_mae: float | None = None
    partial: dict[str, int] = field(default_factory=dict)  # the other models: how many of the hours they have

    def usable(self, min_hours: int) -> bool:
        return self.hours >= min_hours and bool(self.mae) and bool(self.persistence_mae)

    def skill(self, version: str) -> float | None:
        if version not in self.mae or not self.persistence_mae:
            return None
        return 1 - self.mae[version] / self.persistence_mae

    def as_json(self) -> dict[str, Any]:
        return {"window": [self.start.isoformat(), self.end.isoformat()], "hours": self.hours,
                "persistence_mae": self.persistence_mae, "mae": self.mae, "partial": self.partial}


def fair_record(forecasts: Iterable[LiveForecast], start: datetime, end: datetime) -> LiveRecord:
    """Score ``forecasts`` (realized, in ``[start, end)``) by the fairness rule; pure, so it is testable alone."""
    by_model: dict[str, dict[datetime, LiveForecast]] = {}
    persistence: dict[datetime, float] = {}
    for f in forecasts:
        by_model.setdefault(f.model_version, {})[f.target_hour] = f
        persistence[f.target_hour] = f.persistence_abs_error
    hours = set(persistence)
    complete = {v: rows for v, rows in by_model.items() if hours and set(rows) == hours}
    mae = {v: sum(r.abs_error for r in rows.values()) / len(hours) for v, rows in complete.items()}
    reference = sum(persistence.values()) / len(hours) if hours else None
    partial = {v: len(rows) for v, rows in by_model.items() if v not in complete}
    return LiveRecord(start, end, len(hours), mae, reference, partial)


def live_record(engine: Engine, schemas: Schemas, product: str, end: datetime, window_hours: int) -> LiveRecord:
    """The product's live record over the target hours ``[end - window_hours, end)``: every model's realized
    forecasts there (production and shadow; a missing hour realizes nothing), scored by ``fair_record``."""
    from sqlalchemy import text

    from ml.features import FEATURE_TABLE

    end = naive_utc(end)
    start = end - window_hours * HOUR
    features = f"`{schemas.marts}`.`{FEATURE_TABLE}`"
    # the predictions' primary key (product_id, target_hour, ...) over the window, the mart's per row
    sql = text(
        f"select p.model_version, p.target_hour, abs(p.predicted_close - realized.close), "
        f"abs(base.close - realized.close) from `{schemas.ml}`.predictions p "
        f"inner join {features} realized on realized.product_id = p.product_id and realized.hour = p.target_hour "
        f"inner join {features} base on base.product_id = p.product_id and base.hour = p.feature_hour "
        "where p.product_id = :p and p.target_hour >= :start and p.target_hour < :end "
        "and realized.is_missing_hour = 0"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"p": product, "start": start, "end": end}).all()
    return fair_record((LiveForecast(str(r[0]), naive_utc(r[1]), float(r[2]), float(r[3])) for r in rows),
                       start, end)
