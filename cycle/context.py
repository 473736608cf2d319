"""What a cycle works on, resolved once at the edge: the environment, the products and the model store.

The cycle command resolves it from env vars (the local credentials file underneath, env vars winning); an
Airflow task resolves it from the task's environment with Airflow Variables and Connections laid over it
(``dags/candlecast_orchestration/tasks.py``). Either way the steps get the same ``RunContext``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

HOUR = timedelta(hours=1)


class CycleConfigError(ValueError):
    """A setting of the cycle is invalid; the message names where it came from and the bad value."""


def utc_hour(value: datetime) -> datetime:
    """Floor to the hour as a plain tz-aware UTC ``datetime`` (naive means UTC).

    Airflow hands pendulum datetimes, whose differences the libraries' ``timedelta`` arithmetic does not
    accept, so the edge converts once.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, value.hour, tzinfo=UTC)


@dataclass(frozen=True)
class Interval:
    """The hours ``[start, end)`` a run covers (an Airflow data interval), floored to whole UTC hours."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Interval:
        return cls(utc_hour(start), utc_hour(end))

    @classmethod
    def hour_ending(cls, end: datetime) -> Interval:
        """The one closed hour that ends at ``end``."""
        end = utc_hour(end)
        return cls(end - HOUR, end)

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M} UTC"


def schema_base(env: Mapping[str, str]) -> str:
    """The database base name the cycle writes (``CANDLECAST_DB_SCHEMA``): its lock and dbt files are per base."""
    from candlecast.settings import DbServer

    return DbServer.from_env(env).schemas.base


def parse_products(raw: str, source: str) -> tuple[str, ...]:
    products = tuple(p.strip() for p in raw.split(",") if p.strip())
    if not products:
        raise CycleConfigError(f"{source} is set but names no product: {raw!r}")
    return products


@dataclass(frozen=True)
class RunContext:
    """The environment the steps read their connection settings from (and hand to dbt), and what they work on."""

    env: Mapping[str, str] = field(repr=False)  # holds passwords: never printed
    products: tuple[str, ...]
    model_store: Path
    # File descriptors the steps' child processes (dbt) inherit: the cycle's lock, set by ``cycle.run`` while it
    # holds it, so a dbt that outlives a killed cycle keeps the next cycle waiting instead of colliding with it.
    inherit_fds: tuple[int, ...] = ()

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None, *, products: Sequence[str] | None = None,
                model_store: Path | str | None = None) -> RunContext:
        """From ``env`` (default: the process's, over the local credentials file); ``products`` and
        ``model_store`` override ``CANDLECAST_EXTRACT_PRODUCTS`` and ``CANDLECAST_MODEL_STORE`` when given."""
        from candlecast.settings import ExtractSettings, effective_env, ml_settings

        full = effective_env(env)
        chosen = tuple(products) if products else ExtractSettings.from_env(full).products
        if not chosen:
            raise CycleConfigError("no product to run: set CANDLECAST_EXTRACT_PRODUCTS")
        store = Path(model_store) if model_store else ml_settings(full).store_dir
        return cls(env=full, products=chosen, model_store=store)
