"""Settings of the read API and dashboard (``serve/``): where it listens, who may call it, how much one call reads.

The API connects as the ``reader`` role (``db_settings("reader")``); nothing here holds a database secret.
API keys are secrets of their own: never shown in a repr, an error message or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from candlecast.settings.base import EnvSettings
from candlecast.settings.db import Port

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8090


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class ApiSettings(EnvSettings):
    """``CANDLECAST_API_*``: host and port, optional keys, CORS origins, page and range caps, the answer cache,
    the pool, how stale the health mart may be."""

    host: str = Field(DEFAULT_API_HOST, validation_alias="CANDLECAST_API_HOST")
    port: Port = Field(DEFAULT_API_PORT, validation_alias="CANDLECAST_API_PORT")
    # Comma-separated; empty: no key needed. A request then sends one as `X-API-Key` or `Authorization: Bearer`.
    keys: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="CANDLECAST_API_KEYS", repr=False)
    # Comma-separated browser origins allowed to call the API from their pages; empty: CORS off.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="CANDLECAST_API_CORS_ORIGINS")
    default_page_size: int = Field(168, validation_alias="CANDLECAST_API_DEFAULT_PAGE_SIZE")
    max_page_size: int = Field(1000, validation_alias="CANDLECAST_API_MAX_PAGE_SIZE")
    # The longest [start, end) a range request may ask for; the pages inside it are capped separately.
    max_range_days: int = Field(92, validation_alias="CANDLECAST_API_MAX_RANGE_DAYS")
    # Connections the API keeps to MariaDB, and how long it waits for one before answering 503.
    pool_size: int = Field(8, validation_alias="CANDLECAST_API_POOL_SIZE")
    db_timeout_s: int = Field(3, validation_alias="CANDLECAST_API_DB_TIMEOUT_S")
    # Answers are kept in memory this long per URL (the marts change hourly); 0: every request reads the database.
    cache_seconds: float = Field(5.0, validation_alias="CANDLECAST_API_CACHE_SECONDS")
    # Health: the health mart's cycle hour may be this many hours behind the current hour before the API says 503
    # (the mart's own thresholds are dbt vars: it cannot see that the cycle stopped).
    stale_after_hours: int = Field(2, validation_alias="CANDLECAST_API_STALE_AFTER_HOURS")
    workers: int = Field(1, validation_alias="CANDLECAST_API_WORKERS")

    @field_validator("keys", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _comma_separated(value)

    @field_validator("keys")
    @classmethod
    def _long_enough(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(len(key) < 16 for key in value):
            raise ValueError("must hold keys of at least 16 characters each")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"must be http(s) origins (or *); {origin!r} is not")
        return tuple(origin.rstrip("/") for origin in value)

    @field_validator("default_page_size", "max_page_size", "max_range_days", "pool_size", "db_timeout_s",
                     "stale_after_hours", "workers")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @field_validator("cache_seconds")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0 (0: no cache)")
        return value

    @field_validator("max_page_size")
    @classmethod
    def _holds_the_default_page(cls, value: int, info: ValidationInfo) -> int:
        # A field check, not a model one: a model-level error would echo every field, the keys included.
        default = info.data.get("default_page_size")
        if isinstance(default, int) and value < default:
            raise ValueError(f"must be >= CANDLECAST_API_DEFAULT_PAGE_SIZE ({default})")
        return value

def api_settings(env: Mapping[str, str] | None = None) -> ApiSettings:
    return ApiSettings.from_env(env)
