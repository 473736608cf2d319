"""Hourly batch inference: the production model's forecast, served, and every other registered model's in its shadow.

The caller names the *feature hour*: the newest closed candle's bucket start (in Airflow, the data
interval's start). The forecast is for the next hour, ``target_hour = feature_hour + 1h``.

Two entry points:

- ``forecast_hour``: what the hourly cycle calls. It always records an outcome for the target hour in
  ``{base}_ml.forecast_outcomes``: the production model's forecast when the feature hour's candle exists
  and the product has its warm-up (``is_forecastable``); otherwise a *fallback* (persistence from the last
  known close, labelled with its reason; also when the production model learned from features computed by other
  SQL than today's, ``stale_model``: ``ml.lineage``), or *none* when no close of the product is known at all. A re-run
  once the candle has arrived supersedes the fallback with the model's forecast; a further re-run changes
  nothing.
- ``heal_forecasts``: what the hourly cycle calls after it, so nobody has to re-run those intervals: the hours
  of a given range (the extractor's trailing re-fetch window) that got a fallback, or no outcome at all (their
  cycle never ran), and whose candle has since arrived are forecast again (``forecast_hours``), found with one
  query (``healable_hours``).
- ``predict_hour`` / ``predict_range``: strict backfills with the model. A missing row, a row that is not
  forecastable, or any row other than the requested hours is refused with an error that names product and
  hour, and nothing is written: never a silent forecast from an older row.

Model forecasts go to ``predictions`` (what the accuracy marts score) *and* to ``forecast_outcomes``;
fallbacks only to ``forecast_outcomes`` with ``outcome = 'fallback'``, so no model metric mixes them in.

**Shadow forecasts.** Wherever the production model forecasts an hour (all four entry points), every other
registered model that is not archived (the candidates: LightGBM challengers and the baselines) forecasts the same
hour from the same feature row, stored in ``predictions`` with ``role = 'shadow'``; the production model's row has
``role = 'production'`` and is the only one served (``forecast_outcomes``; ``fct_prediction_accuracy`` filtered on
the role). So every model has a record on the same hours, which the leaderboard and the promotion's live record
compare. A shadow model that cannot forecast (a feature gone, or the SQL that computes its features changed since
training: ``ml.eligibility``; its files fail their checksum; it errors) is skipped for the hour with the reason in
``forecast_skips``, and never stops the production forecast. Hours that get a fallback (the stale-model one
included) get no shadow forecasts.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from candlecast.hours import HOUR, naive_utc
from candlecast.settings import Schemas
from ml.metrics import to_prices
from ml.registry import SERVED, SHADOW
from ml.store import LoadedModel, ModelStore

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from ml.lineage import FeatureLineage

log = logging.getLogger(__name__)


class PredictionError(RuntimeError):
    pass


class StaleFeatures(PredictionError):
    """The feature row for the requested hour is missing or not forecastable."""


class StaleModel(PredictionError):
    """The production model was trained on features computed by other SQL than today's (``ml.lineage``)."""


class ModelCache:
    """Loaded models by (store, version): a version is immutable, so it never needs invalidating."""

    def __init__(self, max_size: int = 64) -> None:  # every shadow model too: a few hundred kB each
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
    role: str = SERVED  # SERVED (production) or SHADOW

    def as_row(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "target_hour": self.target_hour, "model_version": self.model_version,
                "role": self.role, "predicted_close": round(self.predicted_close, 12),
                "lower_80": round(self.lower_80, 12), "upper_80": round(self.upper_80, 12),
                "feature_hour": self.feature_hour}


@dataclass(frozen=True)
class ShadowSkip:
    """A shadow model that did not forecast ``target_hour``, and why (``forecast_skips``)."""

    product_id: str
    target_hour: datetime
    model_version: str
    reason: str

    def as_row(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "target_hour": self.target_hour, "model_version": self.model_version,
                "reason": self.reason}


@dataclass(frozen=True)
class Forecasts:
    """The forecasts of a range of hours: production's (served), the shadows', and the shadows skipped."""

    production: list[Prediction]
    shadows: list[Prediction] = field(default_factory=list)
    skips: list[ShadowSkip] = field(default_factory=list)


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
    """Every requested hour present exactly once and forecastable, else StaleFeatures naming them."""
    import pandas as pd

    from ml.features import FORECASTABLE_COLUMN

    present = {pd.Timestamp(h).to_pydatetime(): bool(c)
               for h, c in zip(frame["hour"], frame[FORECASTABLE_COLUMN], strict=True)}
    missing = [h for h in hours if h not in present]
    unusable = [h for h in hours if present.get(h) is False]
    extra = sorted(set(present) - set(hours))
    problems = []
    if missing:
        problems.append(f"no feature row for {_hours_text(missing)}")
    if unusable:
        problems.append(f"feature row not forecastable (the hour's candle is missing, or fewer than 168 h of "
                        f"history) for {_hours_text(unusable)}")
    if extra:
        problems.append(f"unexpected rows for {_hours_text(extra)}")
    if problems:
        raise StaleFeatures(f"{product}: " + "; ".join(problems) + "; nothing written")


def _hours_text(hours: list[datetime]) -> str:
    shown = ", ".join(f"{h:%Y-%m-%d %H:%M}" for h in hours[:5])
    more = f" and {len(hours) - 5} more" if len(hours) > 5 else ""
    return f"{shown}{more} UTC"


def forecast_rows(model: LoadedModel, frame: pd.DataFrame, product: str, history: pd.DataFrame,
                  role: str = SERVED) -> list[Prediction]:
    """The model's forecasts from ``frame``, the 80% interval recalibrated on its realized residuals over ``history``
    (the feature rows before it) and the earlier rows of ``frame`` (``ml.calibrate``)."""
    from ml.calibrate import recalibrated_forecast

    fc = recalibrated_forecast(model.forecaster, history, frame)
    pred, lo, hi = to_prices(frame["close"], fc.point, fc.lower, fc.upper)
    out = []
    for i, hour in enumerate(frame["hour"]):
        h = hour.to_pydatetime()
        if not (pred[i] > 0 and lo[i] > 0 and hi[i] > 0):
            raise PredictionError(f"{product}: model {model.version} gave a non-finite forecast for {h:%Y-%m-%d %H:%M}")
        out.append(Prediction(product, h, h + HOUR, model.version, float(pred[i]), float(lo[i]), float(hi[i]), role))
    return out


def check_lineage(model: LoadedModel, lineage: FeatureLineage, product: str) -> None:
    """StaleModel when ``model`` learned from features computed otherwise than ``lineage`` says they are now."""
    from ml.lineage import stale_reason

    reason = stale_reason(model.metadata, lineage)
    if reason:
        raise StaleModel(f"{product}: model {model.version}: {reason}")


def shadow_models(engine: Engine, schemas: Schemas, store: ModelStore, product: str, production: str,
                  cache: ModelCache, lineage: FeatureLineage) -> tuple[list[LoadedModel], dict[str, str]]:
    """The product's shadow models (every candidate in the registry, ``ml.registry.shadow_versions``) that can
    forecast from the feature mart as it is now (``ml.eligibility``), loaded; and, by version, why each of the
    others cannot."""
    from ml.eligibility import ineligibility
    from ml.features import table_columns
    from ml.registry import shadow_versions

    try:
        versions = [v for v in shadow_versions(engine, schemas, product) if v != production]
        available = table_columns(engine, schemas)
    except Exception as exc:
        raise PredictionError(f"{product}: cannot read the model registry in {schemas.ml}: {exc}") from exc
    loaded: list[LoadedModel] = []
    skipped: dict[str, str] = {}
    for version in versions:
        try:
            model = cache.get(store, version)
        except Exception as exc:  # a broken shadow must not stop the served forecast
            skipped[version] = f"cannot load from the store {store}: {exc}"
            continue
        reason = ineligibility(model.metadata, available, lineage)
        if reason is None:
            loaded.append(model)
        else:
            skipped[version] = reason
    return loaded, skipped


def _model_forecasts(engine: Engine, schemas: Schemas, store: ModelStore, product: str, start: datetime,
                     end: datetime, cache: ModelCache | None, lineage: FeatureLineage) -> Forecasts:
    """Every feature hour in [start, end): the production model's forecasts, all checked (strict), and the shadow
    models' from the same rows (a shadow that fails is skipped with its reason); nothing written."""
    from ml.calibrate import Recalibration
    from ml.features import read_features

    cache = cache or DEFAULT_CACHE
    model = production_model(engine, schemas, store, product, cache)
    check_lineage(model, lineage, product)
    shadows, skipped = shadow_models(engine, schemas, store, product, model.version, cache, lineage)
    columns = list(dict.fromkeys(c for m in (model, *shadows) for c in m.forecaster.features))
    # the hours asked for and, before them, the ones whose realized residuals recalibrate each model's interval
    rows = read_features(engine, schemas, product, start=start - Recalibration().lookback_hours * HOUR, end=end,
                         columns=columns)
    frame, history = rows.loc[rows["hour"] >= start].reset_index(drop=True), rows.loc[rows["hour"] < start]
    hours = [start + i * HOUR for i in range(int((end - start) / HOUR))]
    check_rows(frame, product, hours)
    production = forecast_rows(model, frame, product, history)
    shadow_rows: list[Prediction] = []
    for shadow in shadows:
        try:
            shadow_rows.extend(forecast_rows(shadow, frame, product, history, SHADOW))
        except Exception as exc:
            skipped[shadow.version] = f"error: {type(exc).__name__}: {exc}"
    skips = [ShadowSkip(product, h + HOUR, version, reason) for version, reason in skipped.items() for h in hours]
    for version, reason in skipped.items():
        log.warning("%s: shadow model %s skipped for %s: %s", product, version, _hours_text(hours), reason)
    return Forecasts(production, shadow_rows, skips)


# MariaDB's "table doesn't exist" and "unknown column": the ML tables are missing, or from before a column
MISSING_TABLE_OR_COLUMN = frozenset({1146, 1054})
# A deadlock or a lock wait timeout: processes forecasting other products at the same time (the cycle's shares, the
# DAG's mapped batches) write rows next to each other in the same indexes; InnoDB rolled this one back: run it again.
LOCK_CONFLICT = frozenset({1213, 1205})
WRITE_ATTEMPTS = 4


def _write(engine: Engine, schemas: Schemas, forecasts: Forecasts, outcomes: list[ForecastOutcome]) -> None:
    """One transaction per product and hour. The tables are created (or migrated) on the first write that finds
    them missing, not checked before every write: that was seven statements per product and hour, most of the
    hourly step's round trips once there are hundreds of products."""
    from sqlalchemy.exc import DBAPIError

    from ml.registry import ensure_ml_tables, record_skips, upsert_outcomes, upsert_predictions

    predictions = [p.as_row() for p in (*forecasts.production, *forecasts.shadows)]
    created = False
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                upsert_predictions(conn, schemas, predictions)
                upsert_outcomes(conn, schemas, [o.as_row() for o in outcomes])
                record_skips(conn, schemas, [s.as_row() for s in forecasts.skips],
                             [p.as_row() for p in forecasts.shadows])
            return
        except DBAPIError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if attempt == WRITE_ATTEMPTS or not (code in LOCK_CONFLICT or (code in MISSING_TABLE_OR_COLUMN
                                                                            and not created)):
                raise
            if code in LOCK_CONFLICT:
                log.info("forecast write rolled back by InnoDB (%s); attempt %d of %d", code, attempt + 1,
                         WRITE_ATTEMPTS)
                continue
            ensure_ml_tables(engine, schemas)
            created = True


def predict_range(engine: Engine, schemas: Schemas, store: ModelStore, product: str, start: datetime,
                  end: datetime, cache: ModelCache | None = None, *, lineage: FeatureLineage) -> list[Prediction]:
    """Forecast from every feature hour in [start, end) with the production model and upsert them all (the shadow
    models forecast the same hours beside it); returns the production model's.

    Every hour is checked before anything is written; the writes (predictions and their ``model``
    outcomes, superseding any fallback recorded for those hours) are one transaction.
    """
    start, end = _hour(start, "start hour"), _hour(end, "end hour")
    if end <= start:
        raise PredictionError(f"{product}: empty range {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC")
    forecasts = _model_forecasts(engine, schemas, store, product, start, end, cache, lineage)
    predictions = forecasts.production
    _write(engine, schemas, forecasts, [ForecastOutcome.from_prediction(p) for p in predictions])
    log.info("%s: wrote %d predictions with %s (and %d shadow forecasts, %d skipped)", product, len(predictions),
             predictions[0].model_version, len(forecasts.shadows), len(forecasts.skips))
    return predictions


def predict_hour(engine: Engine, schemas: Schemas, store: ModelStore, product: str, feature_hour: datetime,
                 cache: ModelCache | None = None, *, lineage: FeatureLineage) -> Prediction:
    """Forecast ``feature_hour + 1h`` from the feature row of ``feature_hour`` and upsert it."""
    feature_hour = _hour(feature_hour, "feature hour")
    return predict_range(engine, schemas, store, product, feature_hour, feature_hour + HOUR, cache,
                         lineage=lineage)[0]


# --- the hourly step: always an outcome -------------------------------------------------------------------

MODEL, FALLBACK, NO_FORECAST = "model", "fallback", "none"
CANDLE_MISSING, WARM_UP, NO_HISTORY = "candle_missing", "warm_up", "no_history"
STALE_MODEL = "stale_model"  # the production model learned from features computed by other SQL (ml.lineage)


@dataclass(frozen=True)
class ForecastOutcome:
    """What the hourly step served for ``target_hour``: the model's forecast, a labelled fallback, or none.

    A consumer tells them apart by ``outcome`` (``model`` / ``fallback`` / ``none``); only ``model`` rows
    carry a ``model_version`` and an 80% interval. ``reason_code`` and ``reason`` say why it is not the model.
    """

    product_id: str
    feature_hour: datetime
    target_hour: datetime
    outcome: str
    model_version: str | None = None
    predicted_close: float | None = None
    lower_80: float | None = None
    upper_80: float | None = None
    base_hour: datetime | None = None  # the hour whose close the forecast starts from
    reason_code: str | None = None
    reason: str | None = None
    # what the shadow models did for the hour (not part of the served record): versions that forecast it, and
    # "version: reason" for those skipped
    shadows: tuple[str, ...] = field(default=(), compare=False)
    shadow_skips: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_model(self) -> bool:
        return self.outcome == MODEL

    @classmethod
    def from_prediction(cls, p: Prediction) -> ForecastOutcome:
        return cls(p.product_id, p.feature_hour, p.target_hour, MODEL, p.model_version, p.predicted_close,
                   p.lower_80, p.upper_80, p.feature_hour)

    def as_row(self) -> dict[str, Any]:
        def price(v: float | None) -> float | None:
            return None if v is None else round(v, 12)

        return {"product_id": self.product_id, "target_hour": self.target_hour, "feature_hour": self.feature_hour,
                "outcome": self.outcome, "model_version": self.model_version,
                "predicted_close": price(self.predicted_close), "lower_80": price(self.lower_80),
                "upper_80": price(self.upper_80), "base_hour": self.base_hour, "reason_code": self.reason_code,
                "reason": self.reason and self.reason[:1024]}

    def as_json(self) -> dict[str, Any]:
        """For XCom and logs: times as ISO strings."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.as_row().items()}

    def summary(self) -> str:
        head = f"{self.product_id} {self.target_hour:%Y-%m-%d %H:%M} UTC"
        if self.outcome == MODEL:
            return (f"{head}: model {self.model_version} ${self.predicted_close:,.2f} "
                    f"[80%: ${self.lower_80:,.2f} .. ${self.upper_80:,.2f}]")
        if self.outcome == FALLBACK:
            return f"{head}: FALLBACK persistence ${self.predicted_close:,.2f} ({self.reason_code}: {self.reason})"
        return f"{head}: NO FORECAST ({self.reason_code}: {self.reason})"


@dataclass(frozen=True)
class _LastCandle:
    hour: datetime
    close: float
    is_forecastable: bool


def _last_real_candle(engine: Engine, schemas: Schemas, product: str, at_or_before: datetime) -> _LastCandle | None:
    """The product's newest real candle (not a filled-in missing hour) at or before the hour, from the mart."""
    from sqlalchemy import text

    from ml.features import FEATURE_TABLE

    # The primary key (product_id, hour) walked backwards from the hour: a gap of a few hours costs a few rows.
    sql = text(f"select hour, close, is_forecastable from `{schemas.marts}`.`{FEATURE_TABLE}` "
               "where product_id = :p and hour <= :h and is_missing_hour = 0 order by hour desc limit 1")
    with engine.connect() as conn:
        row = conn.execute(sql, {"p": product, "h": at_or_before}).first()
    if row is None:
        return None
    return _LastCandle(row[0], float(row[1]), bool(row[2]))


def _fallback(product: str, feature_hour: datetime, last: _LastCandle | None, newest: datetime | None,
              table: str, upstream_failure: str | None = None) -> ForecastOutcome:
    target = feature_hour + HOUR
    if last is None:
        return ForecastOutcome(product, feature_hour, target, NO_FORECAST, reason_code=NO_HISTORY,
                               reason=f"no candle of {product} at or before {feature_hour:%Y-%m-%d %H:%M} UTC in "
                                      f"{table}: nothing to forecast from")
    if last.hour == feature_hour:
        code = WARM_UP
        why = (f"the model needs 168 h of history before the hour and {product} does not have them yet; "
               f"persistence from this hour's close")
    else:
        code = CANDLE_MISSING
        gap = int((feature_hour - last.hour) / HOUR)
        if newest is not None and newest >= feature_hour:
            where = "the API left it out (a missing hour)"
        else:
            stored = f"newest stored hour {newest:%Y-%m-%d %H:%M} UTC" if newest else "nothing stored"
            if upstream_failure:
                where = f"{upstream_failure}; {stored} in {table}"
            else:
                where = f"not in {table} yet ({stored}: API outage, late candle, or features not rebuilt)"
        why = (f"no candle for {feature_hour:%Y-%m-%d %H:%M} UTC: {where}; persistence from the last known close, "
               f"{last.hour:%Y-%m-%d %H:%M} UTC ({gap} h earlier)")
    return ForecastOutcome(product, feature_hour, target, FALLBACK, predicted_close=last.close,
                           base_hour=last.hour, reason_code=code, reason=why)


def forecast_hour(engine: Engine, schemas: Schemas, store: ModelStore, product: str, feature_hour: datetime,
                  cache: ModelCache | None = None, upstream_failure: str | None = None, *,
                  lineage: FeatureLineage) -> ForecastOutcome:
    """The hourly step for one interval: forecast ``feature_hour + 1h`` and record the outcome, always.

    ``feature_hour`` is the just-closed hour (the interval's start; the caller's time, never the clock). With that
    hour's candle in the feature mart and the warm-up reached, the production model forecasts it (written to
    ``predictions`` and ``forecast_outcomes``; the shadow models' forecasts to ``predictions``); without it, a
    persistence fallback from the last known close is recorded with its reason (``forecast_outcomes`` only), or
    ``none`` when the product has no close at all. Idempotent: a re-run gives the same rows; a re-run after the
    candle arrived replaces the fallback with the model's forecast. Raises ``PredictionError`` when the model path
    itself fails (no production model, a model that will not load): that is a fault to fix, not a data gap to label.
    ``upstream_failure`` (why the caller knows the candle is missing, e.g. "not fetched: this run's extract step
    failed") replaces the guess at why in a missing candle's reason.
    """
    from ml.features import FEATURE_TABLE, newest_hour

    feature_hour = _hour(feature_hour, "feature hour")
    table = f"{schemas.marts}.{FEATURE_TABLE}"
    try:
        last = _last_real_candle(engine, schemas, product, feature_hour)
    except Exception as exc:
        raise PredictionError(f"{product}: cannot read {table} for {feature_hour:%Y-%m-%d %H:%M} UTC: {exc}") from exc
    if last is not None and last.hour == feature_hour and last.is_forecastable:
        try:
            forecasts = _model_forecasts(engine, schemas, store, product, feature_hour, feature_hour + HOUR, cache,
                                         lineage)
        except StaleModel as exc:
            # Not a fault of this hour: the hour is served (persistence from its close, labelled) until a model
            # trained on today's features is promoted; the healing then re-forecasts it.
            outcome = ForecastOutcome(product, feature_hour, feature_hour + HOUR, FALLBACK, predicted_close=last.close,
                                      base_hour=last.hour, reason_code=STALE_MODEL, reason=str(exc))
            _write(engine, schemas, Forecasts([]), [outcome])
            log.warning("%s", outcome.summary())
            return outcome
        outcome = replace(ForecastOutcome.from_prediction(forecasts.production[0]),
                          shadows=tuple(p.model_version for p in forecasts.shadows),
                          shadow_skips=tuple(f"{s.model_version}: {s.reason}" for s in forecasts.skips))
        _write(engine, schemas, forecasts, [outcome])
        log.info("%s", outcome.summary())
        return outcome
    # the product has rows here (a real candle before the hour), so its newest hour exists
    newest = None if last is None or last.hour == feature_hour else newest_hour(engine, schemas, product)
    outcome = _fallback(product, feature_hour, last, newest, table, upstream_failure)
    _write(engine, schemas, Forecasts([]), [outcome])
    log.warning("%s", outcome.summary())
    return outcome


def forecast_hours(engine: Engine, schemas: Schemas, store: ModelStore, product: str, start: datetime,
                   end: datetime, cache: ModelCache | None = None, *,
                   lineage: FeatureLineage) -> list[ForecastOutcome]:
    """``forecast_hour`` for every feature hour in [start, end): re-running intervals after an outage.

    Hours whose candles have arrived since get the model's forecast (superseding their fallbacks); hours still
    missing keep a labelled fallback; hours already forecast are rewritten with the same values.
    """
    start, end = _hour(start, "start hour"), _hour(end, "end hour")
    if end <= start:
        raise PredictionError(f"{product}: empty range {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC")
    cache = cache or ModelCache()
    return [forecast_hour(engine, schemas, store, product, start + i * HOUR, cache, lineage=lineage)
            for i in range(int((end - start) / HOUR))]


# --- healing: hours that got a fallback, once their candle has arrived ------------------------------------

def healable_hours(engine: Engine, schemas: Schemas, products: list[str] | tuple[str, ...], start: datetime,
                   end: datetime) -> dict[str, list[datetime]]:
    """Per product, the feature hours in [start, end) whose feature row is forecastable (the candle arrived late,
    or after an outage) and whose outcome is a ``fallback``, ``none``, or not recorded at all (the cycle died, or
    the database was down, before predict) -- the last only from the product's first recorded outcome on, so a
    fresh deployment does not forecast old history. One query for every product: the feature mart's primary key
    over the range, the outcomes' primary key per hour and per product's first hour (no scan of history)."""
    from sqlalchemy import bindparam, text

    from ml.features import FEATURE_TABLE, FORECASTABLE_COLUMN

    start, end = _hour(start, "start hour"), _hour(end, "end hour")
    found: dict[str, list[datetime]] = {}
    if end <= start or not products:
        return found
    outcomes = f"`{schemas.ml}`.forecast_outcomes"
    # The product's first outcome as one primary-key read per feature row (order by .. limit 1, not min() over a
    # derived table, which MariaDB computes by reading every outcome of the product): cost flat in history.
    sql = text(
        f"select f.product_id, f.hour from `{schemas.marts}`.`{FEATURE_TABLE}` f "
        f"left join {outcomes} o on o.product_id = f.product_id and o.target_hour = f.hour + interval 1 hour "
        "where f.product_id in :products and f.hour >= :start and f.hour < :end "
        f"and f.{FORECASTABLE_COLUMN} = 1 "
        f"and (o.product_id is null or o.outcome in ('{FALLBACK}', '{NO_FORECAST}')) "
        f"and f.hour >= (select e.target_hour from {outcomes} e where e.product_id = f.product_id "
        "                order by e.target_hour limit 1) "
        "order by f.product_id, f.hour"
    ).bindparams(bindparam("products", expanding=True))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sql, {"products": list(products), "start": start, "end": end}).all()
    except Exception as exc:
        raise PredictionError(f"cannot look for healable hours {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC in "
                              f"{schemas.ml}.forecast_outcomes: {exc}") from exc
    for product, hour in rows:
        found.setdefault(product, []).append(naive_utc(hour))
    return found


def _runs(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted hours as [start, end) ranges of consecutive hours."""
    ranges: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + HOUR)
        else:
            ranges.append((hour, hour + HOUR))
    return ranges


def heal_forecasts(engine: Engine, schemas: Schemas, store: ModelStore, products: list[str] | tuple[str, ...],
                   start: datetime, end: datetime, cache: ModelCache | None = None, *,
                   lineage: FeatureLineage,
                   failures: dict[str, BaseException] | None = None) -> dict[str, list[ForecastOutcome]]:
    """Re-forecast (``forecast_hours``) every feature hour in [start, end) whose recorded outcome is a fallback
    or none, or that has no outcome (after the product's first one: its cycle never ran), and whose candle has
    since arrived and is forecastable; the outcomes written, per product.

    What an operator would otherwise do by re-running those intervals, done by the hourly step itself: the
    caller passes the hours the extractor's trailing re-fetch covers, where late candles land. Idempotent: a
    healed hour is a ``model`` outcome (its ``replaced_outcome`` keeps what was served at cycle time) and is
    not found again; an hour whose candle is still missing is not touched (one with no outcome gets none: nothing
    was served at its cycle, and a fallback recorded now would pretend otherwise). ``cache`` defaults to the process's
    (``forecast_hour``'s), so the hour's own forecast and the healing load the model once. With ``failures`` given,
    a product whose healing fails is put there (product -> error) and the others are still healed.
    """
    cache = cache or DEFAULT_CACHE
    healed: dict[str, list[ForecastOutcome]] = {}
    for product, hours in healable_hours(engine, schemas, products, start, end).items():
        try:
            outcomes = [o for first, last in _runs(hours)
                        for o in forecast_hours(engine, schemas, store, product, first, last, cache, lineage=lineage)]
        except Exception as exc:
            if failures is None:
                raise
            log.error("%s: healing failed: %s: %s", product, type(exc).__name__, exc)
            failures[product] = exc
            continue
        log.info("%s: healed %d hour(s) that had a fallback or no outcome: %s", product, len(outcomes),
                 _hours_text([o.feature_hour for o in outcomes]))
        healed[product] = outcomes
    return healed
