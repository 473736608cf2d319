"""SQLAlchemy engines per role; SQLAlchemy is imported lazily so importing this is cheap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from candlecast.settings import DbSettings, Role, db_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refused the connection."""


def make_engine(
    settings: DbSettings,
    database: str | None = None,
    *,
    connect_args: Mapping[str, object] | None = None,
    **engine_kwargs: Any,  # passed on to sqlalchemy.create_engine (poolclass=..., echo=...), typed Any there too
) -> Engine:
    from sqlalchemy import create_engine

    driver_args: dict[str, object] = {
        "connect_timeout": settings.connect_timeout,
        # Every DATETIME in the project is UTC; make the session agree so NOW() and friends do too.
        "init_command": "SET time_zone = '+00:00'",
    }
    driver_args.update(connect_args or {})
    return create_engine(
        settings.sqlalchemy_url(database),
        pool_pre_ping=True,
        connect_args=driver_args,
        **engine_kwargs,
    )


def engine_for(role: Role, env: Mapping[str, str] | None = None, **engine_kwargs: Any) -> Engine:
    return make_engine(db_settings(role, env), **engine_kwargs)


def check_connection(engine: Engine, what: str) -> None:
    """Fail fast with a message naming the server, instead of a driver traceback deep inside."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        url = engine.url
        raise DatabaseUnavailable(
            f"{what}: cannot connect to MariaDB at {url.username}@{url.host}:{url.port}: {exc.orig}"
        ) from exc
