"""Where the project's local services keep their state and listen: ``.local/`` (MariaDB, PostgreSQL, Airflow,
models).

The local MariaDB listens on ``CANDLECAST_DB_PORT`` (``DbServer``); the local PostgreSQL (Airflow's metadata
database) on ``CANDLECAST_PG_PORT``; the local Airflow on ``CANDLECAST_AIRFLOW_PORT``, with its home in
``CANDLECAST_AIRFLOW_HOME``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from candlecast.settings.base import DEFAULT_LOCAL_DIR, EnvSettings, default_under_local_dir
from candlecast.settings.db import Port

DEFAULT_AIRFLOW_PORT = 8080
DEFAULT_DB_BIND_ADDRESS = "127.0.0.1"
# Next to MariaDB's 3407 in spirit: a system PostgreSQL on 5432 does not clash.
DEFAULT_PG_PORT = 5407
DEFAULT_AIRFLOW_DB = "airflow"
# Celery's broker for `make airflow EXECUTOR=celery`; a system Redis on 6379 does not clash.
DEFAULT_REDIS_PORT = 6407


class LocalServices(EnvSettings):
    """``CANDLECAST_LOCAL_DIR``, ``CANDLECAST_AIRFLOW_HOME`` (default ``$CANDLECAST_LOCAL_DIR/airflow``),
    ``CANDLECAST_AIRFLOW_PORT``; the local MariaDB's ``CANDLECAST_DB_BIND_ADDRESS`` and ``CANDLECAST_DB_TLS``
    (remote SQL consumers, opt-in: see the README's Security section), and ``CANDLECAST_DB_PRIVATE_NETWORK``
    (the server's container in the compose file: its address is on the compose network alone); the local
    PostgreSQL's ``CANDLECAST_PG_PORT``, and Airflow's metadata database in it, ``CANDLECAST_AIRFLOW_DB``
    (``CANDLECAST_AIRFLOW_METADATA=sqlite`` opts out of PostgreSQL); the executor, ``CANDLECAST_AIRFLOW_EXECUTOR``
    (local or celery), with ``CANDLECAST_AIRFLOW_WORKERS`` Celery workers and the local Redis on
    ``CANDLECAST_REDIS_PORT`` as their broker."""

    reads_credentials_file = True

    local_dir: Path = Field(DEFAULT_LOCAL_DIR, validation_alias="CANDLECAST_LOCAL_DIR")
    airflow_home: Path = Field(validation_alias="CANDLECAST_AIRFLOW_HOME")
    airflow_port: Port = Field(DEFAULT_AIRFLOW_PORT, validation_alias="CANDLECAST_AIRFLOW_PORT")
    db_bind_address: str = Field(DEFAULT_DB_BIND_ADDRESS, validation_alias="CANDLECAST_DB_BIND_ADDRESS")
    db_tls: bool = Field(False, validation_alias="CANDLECAST_DB_TLS")
    # Set by the compose file only: the bound address is the MariaDB container's own, on a network that only the
    # project's containers join and whose port is not published, so plain connections from there are accepted.
    db_private_network: bool = Field(False, validation_alias="CANDLECAST_DB_PRIVATE_NETWORK")
    pg_port: Port = Field(DEFAULT_PG_PORT, validation_alias="CANDLECAST_PG_PORT")
    # Where Airflow keeps its metadata: the project's PostgreSQL, or (opt-in: one writer at a time) SQLite.
    airflow_metadata: Literal["postgres", "sqlite"] = Field("postgres", validation_alias="CANDLECAST_AIRFLOW_METADATA")
    airflow_db: str = Field(DEFAULT_AIRFLOW_DB, validation_alias="CANDLECAST_AIRFLOW_DB",
                            pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    redis_port: Port = Field(DEFAULT_REDIS_PORT, validation_alias="CANDLECAST_REDIS_PORT")
    # `make airflow EXECUTOR=celery WORKERS=2`: the CeleryExecutor with that many workers (candlecast.airflow_celery).
    airflow_executor: Literal["local", "celery"] = Field("local", validation_alias="CANDLECAST_AIRFLOW_EXECUTOR")
    airflow_workers: int = Field(2, ge=1, le=16, validation_alias="CANDLECAST_AIRFLOW_WORKERS")

    @model_validator(mode="before")
    @classmethod
    def _airflow_under_local_dir(cls, data: Any) -> Any:
        return default_under_local_dir(data, "CANDLECAST_AIRFLOW_HOME", "airflow_home", "airflow")

    @property
    def mariadb_dir(self) -> Path:
        return self.local_dir / "mariadb"

    @property
    def postgres_dir(self) -> Path:
        return self.local_dir / "postgres"

    @property
    def redis_dir(self) -> Path:
        return self.local_dir / "redis"


def local_services(env: Mapping[str, str] | None = None) -> LocalServices:
    return LocalServices.from_env(env)
