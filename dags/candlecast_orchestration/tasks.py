"""What the DAGs' Python tasks do: thin wrappers over the extract/ and ml/ library functions.

Each function takes its times and products from the caller (the task, from the run's data interval) and its
connection settings from the environment, once, at the edge; it returns a small JSON-able summary for XCom.
Nothing here is imported at DAG parse time: the TaskFlow tasks import it when they run, so pandas,
SQLAlchemy and LightGBM stay out of the DAG processor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candlecast_orchestration.config import VAR_MODEL_STORE, VAR_PRODUCTS

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from candlecast.settings import Role, Schemas

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)


class TaskConfigError(ValueError):
    """A run-time setting (Airflow Variable or env var) is invalid."""


def utc_hour(value: datetime) -> datetime:
    """Floor to the hour as a plain tz-aware UTC ``datetime``.

    Airflow hands pendulum datetimes; their differences are pendulum intervals, which the libraries'
    ``timedelta`` arithmetic does not accept, so the edge converts once.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, value.hour, tzinfo=UTC)


@dataclass(frozen=True)
class RunConfig:
    """What a run works on, resolved when the task starts (Variables win over env vars)."""

    products: tuple[str, ...]
    model_store: Path

    @classmethod
    def resolve(cls, variables: Mapping[str, str | None] | None = None,
                env: Mapping[str, str] | None = None) -> RunConfig:
        from extract.settings import ExtractSettings
        from ml.settings import ml_settings

        variables = variables or {}
        raw_products = variables.get(VAR_PRODUCTS)
        if raw_products is not None:
            products = tuple(p.strip() for p in raw_products.split(",") if p.strip())
            if not products:
                raise TaskConfigError(f"Airflow Variable {VAR_PRODUCTS} is set but names no product: {raw_products!r}")
        else:
            products = ExtractSettings.from_env(env).products
        store = variables.get(VAR_MODEL_STORE) or str(ml_settings(env).store_dir)
        return cls(products=products, model_store=Path(store))


def airflow_variables() -> dict[str, str | None]:
    """The run-time Variables, read inside a running task (never at parse time)."""
    from airflow.sdk import Variable

    return {name: Variable.get(name, default=None) for name in (VAR_PRODUCTS, VAR_MODEL_STORE)}


def json_safe(value: Any) -> Any:
    """XCom-safe copy: NaN (a metric with nothing to measure) becomes None, datetimes ISO strings."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def task_env(role: Role, conn_prefix: str | None) -> dict[str, str]:
    """The environment a task reads its DB settings from: the process env, or the Airflow Connection
    ``{conn_prefix}_{role}`` laid over it when connections are in use."""
    import os

    env = dict(os.environ)
    if not conn_prefix:
        return env
    from airflow.sdk import Connection

    from candlecast_orchestration.config import conn_id

    conn = Connection.get(conn_id(conn_prefix, role))
    upper = role.upper()
    env.update({f"CANDLECAST_{upper}_USER": conn.login or role, f"CANDLECAST_{upper}_PASSWORD": conn.password or "",
                "CANDLECAST_DB_SCHEMA": conn.schema or "candlecast"})
    if conn.host:
        env["CANDLECAST_DB_HOST"] = conn.host
    if conn.port:
        env["CANDLECAST_DB_PORT"] = str(conn.port)
    return env


@contextmanager
def _engine(role: Role, env: Mapping[str, str] | None = None) -> Iterator[tuple[Engine, Schemas]]:
    from candlecast.db import check_connection, make_engine
    from candlecast.settings import db_settings

    settings = db_settings(role, env)
    engine = make_engine(settings)
    try:
        check_connection(engine, f"candlecast {role}")
        yield engine, settings.schemas
    finally:
        engine.dispose()


def extract_interval(products: Sequence[str], start: datetime, end: datetime,
                     env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Fetch and upsert the closed hours ``[start, end)`` of every product (the run's data interval).

    A backfill of exactly the interval, so a re-run, a catch-up and ``airflow backfill create`` all store
    the same rows a direct ``python -m extract backfill`` of those hours does. ``now`` is the interval's
    end: the hours inside it are closed by then, and the open hour is never stored.
    """
    from extract.pipeline import backfill
    from extract.settings import ExtractSettings

    start, end = utc_hour(start), utc_hour(end)
    settings = ExtractSettings.from_env(env).with_(products=tuple(products))
    summaries = []
    with _engine("loader", env) as (engine, schemas):
        for product in products:
            result = backfill(product, start, end, engine=engine, schemas=schemas, settings=settings, now=end)
            log.info("%s", result.summary())
            summaries.append({
                "product": product, "start": start.isoformat(), "end": end.isoformat(),
                "received": result.received, "inserted": result.inserted, "updated": result.updated,
                "rejected": result.rejected, "gaps": [g.isoformat() for g in result.gaps],
            })
    return summaries


def predict_interval_end(products: Sequence[str], store_dir: Path, end: datetime,
                         env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Forecast the hour starting at the interval's end from the newest closed hour, per product.

    Each product gets an outcome (``ml.predict.forecast_hour``): the production model's forecast, or, when the
    just-closed candle is missing, a labelled persistence fallback; the task succeeds either way and logs a
    warning for a fallback. Clearing the run once the candle has arrived replaces the fallback with the model.
    """
    from ml.predict import forecast_hour
    from ml.store import ModelStore

    feature_hour = utc_hour(end) - HOUR
    store = ModelStore(store_dir)
    out = []
    with _engine("ml", env) as (engine, schemas):
        for product in products:
            outcome = forecast_hour(engine, schemas, store, product, feature_hour)
            out.append(outcome.as_json())
    return out


def training_cutoff(window_end: datetime, holdout_hours: int) -> datetime:
    """The new models train before this, leaving the last ``holdout_hours`` for the evaluation every model faces."""
    return utc_hour(window_end) - timedelta(hours=holdout_hours)


def train_products(products: Sequence[str], store_dir: Path, window_end: datetime,
                   env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    from ml.settings import ml_settings
    from ml.store import ModelStore
    from ml.train import TrainConfig, train

    settings = ml_settings(env)
    cutoff = training_cutoff(window_end, settings.holdout_hours)
    store = ModelStore(store_dir)
    config = TrainConfig(num_threads=settings.num_threads)
    out = []
    with _engine("ml", env) as (engine, schemas):
        for product in products:
            result = train(engine, schemas, store, product, cutoff, config)
            out.append({"product": product, "cutoff": cutoff.isoformat(), "versions": result.versions})
    return out


def _evaluate(products: Sequence[str], store_dir: Path, window_end: datetime, record: bool,
              env: Mapping[str, str] | None) -> dict[str, Any]:
    from ml.evaluate import evaluate
    from ml.store import ModelStore

    store = ModelStore(store_dir)
    reports = {}
    with _engine("ml", env) as (engine, schemas):
        for product in products:
            reports[product] = evaluate(engine, schemas, store, product, utc_hour(window_end), record=record)
    return reports


def evaluate_store(products: Sequence[str], store_dir: Path, window_end: datetime,
                   env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Score every stored model of each product on the holdout that ends at ``window_end``; record the scores."""
    out = []
    for product, report in _evaluate(products, store_dir, window_end, True, env).items():
        log.info("%s holdout scores:\n%s", product, report.table())
        out.append({
            "product": product, "window_start": report.window_start.isoformat(),
            "window_end": report.window_end.isoformat(), "rows": report.rows,
            "models": json_safe([r.as_row() for r in report.results]),
        })
    return out


def promote_best(products: Sequence[str], store_dir: Path, window_end: datetime,
                 env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Make each product's lowest-MAE model on the holdout production (persistence when nothing beats it).

    The scores are recomputed here rather than carried over XCom: scoring is deterministic and cheap (a few
    models over one week), and this keeps the task re-runnable on its own.
    """
    from ml.promote import promote

    out = []
    reports = _evaluate(products, store_dir, window_end, False, env)
    with _engine("ml", env) as (engine, schemas):
        for product, report in reports.items():
            decision = promote(engine, schemas, report)
            out.append({"product": product, "production": decision.winner, "previous": decision.previous,
                        "changed": decision.changed, "reason": decision.reason})
    return out
