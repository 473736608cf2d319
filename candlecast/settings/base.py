"""The reader under every settings model: env vars over the local credentials file, one error type.

Values come from the environment, read once at the edge (CLI, demo, DAG task) and passed down. The project's
local MariaDB writes its generated passwords into a 0600 env file under ``.local/``
(``CANDLECAST_CREDENTIALS_FILE``); that file is only the *default*: any variable set in the environment wins.
The file is parsed by python-dotenv (quotes, ``export``, comments), not by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOCAL_DIR = REPO_ROOT / ".local"


def default_under_local_dir(data: Any, env_name: str, field_name: str, folder: str) -> Any:
    """A ``mode="before"`` validator's input with ``field_name`` defaulted to ``$CANDLECAST_LOCAL_DIR/folder``
    when neither the env var nor the field is given (the local dir itself may come from either)."""
    if isinstance(data, dict) and not (data.get(env_name) or data.get(field_name)):
        local = data.get("CANDLECAST_LOCAL_DIR") or data.get("local_dir") or DEFAULT_LOCAL_DIR
        data = {**data, field_name: Path(local) / folder}
    return data


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the variable and the value."""


def local_dir(env: Mapping[str, str] | None = None) -> Path:
    """``CANDLECAST_LOCAL_DIR``: where local state lives (database files, model store, Airflow home)."""
    env = os.environ if env is None else env
    return Path(env.get("CANDLECAST_LOCAL_DIR") or DEFAULT_LOCAL_DIR)


def credentials_file(env: Mapping[str, str] | None = None) -> Path:
    """``CANDLECAST_CREDENTIALS_FILE``, by default the file ``candlecast.mariadb`` generates."""
    env = os.environ if env is None else env
    return Path(env.get("CANDLECAST_CREDENTIALS_FILE") or local_dir(env) / "mariadb" / "credentials.env")


def read_env_file(path: Path) -> dict[str, str]:
    """A ``KEY=VALUE`` file (the format ``make`` and ``set -a; . file`` also read); {} when it does not exist."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path, encoding="utf-8").items() if value is not None}


def effective_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The credentials file's values overlaid by the real environment (env wins): what a subprocess gets."""
    env = os.environ if env is None else env
    merged = read_env_file(credentials_file(env))
    merged.update(env)
    return merged


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' env source over a given mapping instead of ``os.environ``.

    Only fields with an env var name (``validation_alias``) are read. An empty value means "unset" (the default
    applies, as it always did here), except for the variables a model lists in ``blank_is_a_value``.
    """

    def __init__(self, settings_cls: type[EnvSettings], env: Mapping[str, str]) -> None:
        keep = settings_cls.blank_is_a_value
        self._env = {k: v for k, v in env.items() if v.strip() != "" or k in keep}
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if not isinstance(field.validation_alias, str):
            return None, field_name, False
        return super().get_field_value(field, field_name)


_TYPE_NAMES = {
    "int_parsing": "int", "int_from_float": "int", "int_type": "int",
    "float_parsing": "float", "float_type": "float",
    "bool_parsing": "boolean (true or false)", "bool_type": "boolean (true or false)",
}


class EnvSettings(BaseSettings):
    """Base of every settings model: fields named in Python, each read from the env var in its alias.

    Constructing a model directly (``ExtractSettings(api_url=...)``) never reads the environment; ``from_env``
    does, and is the one way settings enter the program.
    """

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, extra="ignore", validate_by_name=True, validate_by_alias=True,
    )
    # True where the generated credentials file is a default source (the DB and local-server settings).
    reads_credentials_file: ClassVar[bool] = False
    blank_is_a_value: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """The settings from ``env`` (default ``os.environ``), over the credentials file where the model reads it."""
        env = os.environ if env is None else env
        values = effective_env(env) if cls.reads_credentials_file else dict(env)
        data = _MappingSource(cls, values)()
        for name, field in cls.model_fields.items():
            # A nested settings model (the DAGs' dbt settings) reads the same environment.
            if isinstance(field.annotation, type) and issubclass(field.annotation, EnvSettings):
                data[name] = field.annotation.from_env(env)
        return cls._validated(data, hint=cls._missing_hint(env))

    @classmethod
    def _missing_hint(cls, env: Mapping[str, str]) -> str:
        if cls.reads_credentials_file:
            return (f" and {credentials_file(env)} does not define it; run `make db-start` (local MariaDB) "
                    "or export the variable")
        return ""

    @classmethod
    def _validated(cls, data: Mapping[str, Any], hint: str = "") -> Self:
        try:
            return cls(**data)
        except ValidationError as exc:
            raise SettingsError(cls._describe(exc, hint)) from None

    def with_(self, **changes: Any) -> Self:
        """A copy with some fields changed (by their Python names), validated like the original."""
        return self._validated({**self.model_dump(), **changes})

    @classmethod
    def env_name(cls, field_name: str) -> str:
        """The env var a field is read from (the field's own name when it has none)."""
        field = cls.model_fields.get(field_name)
        alias = field.validation_alias if field is not None else None
        return alias if isinstance(alias, str) else field_name

    @classmethod
    def _describe(cls, exc: ValidationError, hint: str) -> str:
        problems = []
        for error in exc.errors(include_url=False):
            where = str(error["loc"][0]) if error["loc"] else cls.__name__
            name = cls.env_name(where) if where in cls.model_fields else where
            field = cls.model_fields.get(where) or next(
                (f for f in cls.model_fields.values() if f.validation_alias == where), None)
            hidden = field is not None and field.repr is False
            value = error.get("input")
            if error["type"] == "missing":
                problems.append(f"{name} is not set{hint}")
            elif error["type"] in _TYPE_NAMES:
                shown = "(hidden)" if hidden else repr(value)
                problems.append(f"{name} must be a {_TYPE_NAMES[error['type']]}, got {shown}")
            else:
                # A value of the right type that breaks a rule: shown as it was written (`got -1`).
                shown = "(hidden)" if hidden else str(value)
                reason = str(error["msg"]).removeprefix("Value error, ")
                sep = " " if reason.startswith("must") else ": "
                problems.append(f"{name}{sep}{reason}, got {shown}")
        return "; ".join(problems)
