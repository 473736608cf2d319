"""The database: where it is (host, port, the databases' base name) and one least-privilege role's login.

A process asks for its role (``db_settings("loader")``) and gets that role's user and password only, from
``CANDLECAST_<ROLE>_USER`` / ``_PASSWORD``. Pointing ``CANDLECAST_DB_HOST``/``_PORT`` and those variables at
another MariaDB or MySQL needs no code change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, create_model, field_validator
from pydantic_settings import NoDecode

from candlecast.inputs import schema_base
from candlecast.settings.base import EnvSettings
from candlecast.sql import check_identifier

Role = Literal["admin", "loader", "transformer", "ml", "reader"]
ROLES: tuple[Role, ...] = ("admin", "loader", "transformer", "ml", "reader")

DEFAULT_DB_HOST = "127.0.0.1"
# Not 3306, so that a system server on its default port does not clash with the project's own.
DEFAULT_DB_PORT = 3407
DEFAULT_SCHEMA_BASE = "candlecast"
DEFAULT_CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Schemas:
    """MariaDB databases ("schemas" in dbt's words), all derived from one base name."""

    base: str = DEFAULT_SCHEMA_BASE

    def __post_init__(self) -> None:
        # The base becomes database names in SQL and dbt schemas: a plain identifier only, wherever it came from
        # (env var, Airflow Connection, CLI).
        schema_base(self.base)

    @property
    def raw(self) -> str:
        return f"{self.base}_raw"

    @property
    def staging(self) -> str:
        return f"{self.base}_staging"

    @property
    def intermediate(self) -> str:
        return f"{self.base}_intermediate"

    @property
    def marts(self) -> str:
        return f"{self.base}_marts"

    @property
    def ml(self) -> str:
        return f"{self.base}_ml"

    def all(self) -> tuple[str, ...]:
        # ``base`` itself is dbt's target schema: seeds/tests without a custom schema land there.
        return (self.base, self.raw, self.staging, self.intermediate, self.marts, self.ml)


def _port_number(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be a TCP port (1-65535)")
    return value


Port = Annotated[int, AfterValidator(_port_number)]


class DbServer(EnvSettings):
    """Where the database is: ``CANDLECAST_DB_HOST``, ``CANDLECAST_DB_PORT``, ``CANDLECAST_DB_SCHEMA``."""

    reads_credentials_file = True

    host: str = Field(DEFAULT_DB_HOST, validation_alias="CANDLECAST_DB_HOST")
    port: Port = Field(DEFAULT_DB_PORT, validation_alias="CANDLECAST_DB_PORT")
    schemas: Annotated[Schemas, NoDecode] = Field(Schemas(), validation_alias="CANDLECAST_DB_SCHEMA")

    @field_validator("schemas", mode="before")
    @classmethod
    def _schemas_from_base(cls, value: Any) -> Any:
        return Schemas(value.strip()) if isinstance(value, str) else value

    @field_validator("schemas")
    @classmethod
    def _quotable(cls, value: Schemas) -> Schemas:
        # Checked here, so a bad base fails at start-up naming the variable, not in the first statement.
        for name in value.all():
            check_identifier(name)
        return value


class RoleLogin(DbServer):
    """The server plus one role's login; ``_role_model`` makes the subclass that reads that role's variables."""

    user: str
    password: str = Field(repr=False)

    # A blank password is a password (some servers allow it), not "unset".
    blank_is_a_value = frozenset(f"CANDLECAST_{role.upper()}_PASSWORD" for role in ROLES)


@dataclass(frozen=True)
class DbSettings:
    """One role's connection, as ``db_settings(role)`` reads it (or a test builds it)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    schemas: Schemas
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_S

    def sqlalchemy_url(self, database: str | None = None) -> str:
        from urllib.parse import quote_plus

        db = f"/{database}" if database else ""
        return (
            f"mysql+pymysql://{quote_plus(self.user)}:{quote_plus(self.password)}"
            f"@{self.host}:{self.port}{db}?charset=utf8mb4"
        )

    def describe(self) -> str:
        """Where this connects, without the password (safe for error messages and logs)."""
        return f"{self.user}@{self.host}:{self.port}"


def role_env_names(role: Role) -> tuple[str, str]:
    """The env vars of one role's login: ``CANDLECAST_<ROLE>_USER``, ``CANDLECAST_<ROLE>_PASSWORD``."""
    return f"CANDLECAST_{role.upper()}_USER", f"CANDLECAST_{role.upper()}_PASSWORD"


@cache
def _role_model(role: Role) -> type[RoleLogin]:
    if role not in ROLES:
        raise ValueError(f"unknown database role {role!r}; one of {ROLES}")
    user_var, password_var = role_env_names(role)
    model: type[RoleLogin] = create_model(
        f"{role.title()}Login",
        __base__=RoleLogin,
        user=(str, Field(role, validation_alias=user_var)),
        password=(str, Field(validation_alias=password_var, repr=False)),
    )
    return model


def db_settings(role: Role, env: Mapping[str, str] | None = None) -> DbSettings:
    """The connection settings of one least-privilege role (env vars over the credentials file)."""
    login = _role_model(role).from_env(env)
    return DbSettings(login.host, login.port, login.user, login.password, login.schemas)
