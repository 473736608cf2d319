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


class LocalServices(EnvSettings):
    """``CANDLECAST_LOCAL_DIR``, ``CANDLECAST_AIRFLOW_HOME`` (default ``$CANDLECAST_LOCAL_DIR/airflow``),
    ``CANDLECAST_AIRFLOW_PORT``; the local MariaDB's ``CANDLECAST_DB_BIND_ADDRESS`` and ``CANDLECAST_DB_TLS``
    (remote SQL consumers, opt-in: see the README's Security section), and ``CANDLECAST_DB_PRIVATE_NETWORK``
    (the server's container in the compose file: its address is on the compose network alone); the local
    PostgreSQL's ``CANDLECAST_PG_PORT``, and Airflow's metadata database in it, ``CANDLECAST_AIRFLOW_DB``
    (``CANDLECAST_AIRFLOW_METADATA=sqlite`` opts out of PostgreSQL)."""

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


def local_services(env: Mapping[str, str] | None = None) -> LocalServices:
    return LocalServices.from_env(env)
