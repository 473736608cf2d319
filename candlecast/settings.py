"""Connection settings for every component, read once from env vars.

The project's local MariaDB (``candlecast.mariadb``) writes generated passwords into a 0600
credentials file under ``.local/``; that file is only the *default*. Any value set in the
environment wins, so pointing ``CANDLECAST_DB_HOST``/``_PORT`` and the per-role user/password
variables at another MariaDB or MySQL needs no code change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["admin", "loader", "transformer", "ml", "reader"]
ROLES: tuple[Role, ...] = ("admin", "loader", "transformer", "ml", "reader")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCAL_DIR = REPO_ROOT / ".local"


class SettingsError(RuntimeError):
    """A required setting is missing or invalid."""


def local_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CANDLECAST_LOCAL_DIR", str(DEFAULT_LOCAL_DIR)))


def credentials_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    default = local_dir(env) / "mariadb" / "credentials.env"
    return Path(env.get("CANDLECAST_CREDENTIALS_FILE", str(default)))


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``KEY=VALUE`` file (the format ``make`` and ``set -a; . file`` also read)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def effective_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The credentials file's values overlaid by the real environment (env wins)."""
    env = dict(os.environ if env is None else env)
    merged = read_env_file(credentials_file(env))
    merged.update(env)
    return merged


@dataclass(frozen=True)
class Schemas:
    """MariaDB databases ("schemas" in dbt's words), all derived from one base name."""

    base: str = "candlecast"

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


@dataclass(frozen=True)
class DbSettings:
    host: str
    port: int
    user: str
    password: str
    schemas: Schemas
    connect_timeout: int = 10

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


def db_settings(role: Role, env: Mapping[str, str] | None = None) -> DbSettings:
    """Settings for one least-privilege role: ``CANDLECAST_<ROLE>_USER`` / ``_PASSWORD``."""
    values = effective_env(env)
    prefix = f"CANDLECAST_{role.upper()}"
    password = values.get(f"{prefix}_PASSWORD")
    if password is None:
        raise SettingsError(
            f"{prefix}_PASSWORD is not set and {credentials_file(values)} does not define it; "
            "run `make db-start` (local MariaDB) or export the variable"
        )
    try:
        port = int(values.get("CANDLECAST_DB_PORT", "3407"))
    except ValueError as exc:
        raise SettingsError(f"CANDLECAST_DB_PORT is not a number: {values['CANDLECAST_DB_PORT']!r}") from exc
    return DbSettings(
        host=values.get("CANDLECAST_DB_HOST", "127.0.0.1"),
        port=port,
        user=values.get(f"{prefix}_USER", role),
        password=password,
        schemas=Schemas(values.get("CANDLECAST_DB_SCHEMA", "candlecast")),
    )
