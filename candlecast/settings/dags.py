"""Settings of the DAGs, and how an Airflow Connection maps onto a role's database settings.

Two kinds, read at two different moments:

- ``DagSettings`` shape the DAGs (schedules, retries, how Cosmos renders dbt). They are read from env vars
  when a DAG file is parsed: a dictionary lookup, no I/O, no database, no Airflow Variable (a Variable read
  at parse time is a metadata-DB query on every parse), not even the credentials file.
- What a run works on (products, the model store, the database) is read inside the tasks, at run time, from
  Airflow Variables when set, else the same env vars the CLIs read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from candlecast.settings.base import EnvSettings
from candlecast.settings.db import DEFAULT_DB_HOST, DEFAULT_DB_PORT, DEFAULT_SCHEMA_BASE, Role, role_env_names
from candlecast.settings.dbt import DbtSettings

HOURLY_DAG_ID = "candlecast_hourly"
RETRAIN_DAG_ID = "candlecast_weekly_retrain"
RETRAIN_GROUP = "retrain"  # the weekly DAG's task group of train, evaluate and promote, mapped over product batches

# Airflow Variables a task reads at run time (each falls back to the env var the CLIs read).
VAR_PRODUCTS = "candlecast_products"  # comma-separated, e.g. "BTC-USD,ETH-USD"
VAR_MODEL_STORE = "candlecast_model_store"

LOAD_METHODS = ("dbt_manifest", "dbt_ls")
TEST_BEHAVIORS = ("build", "after_each", "after_all", "none")
# watcher: one `dbt build` per group, one task per model reading its result (candlecast_orchestration.watch);
# local: one `dbt build` per model, each in its own task (Cosmos's default; ~3 s of dbt start-up per model).
EXECUTION_MODES = ("watcher", "local")


class DagSettings(EnvSettings):
    """``CANDLECAST_HOURLY_SCHEDULE``, ``CANDLECAST_RETRAIN_SCHEDULE``, ``CANDLECAST_DAG_*`` (``_BATCH_SIZE`` too),
    ``CANDLECAST_COSMOS_*``, ``CANDLECAST_AIRFLOW_CONN_PREFIX`` and the dbt settings."""

    hourly_schedule: str = Field("@hourly", validation_alias="CANDLECAST_HOURLY_SCHEDULE")
    retrain_schedule: str = Field("30 23 * * 0", validation_alias="CANDLECAST_RETRAIN_SCHEDULE")
    # The bundled sample starts here; backfills before it have nothing to extract.
    start_date: datetime = Field(datetime(2021, 12, 14, tzinfo=UTC), validation_alias="CANDLECAST_DAG_START_DATE")
    # The last interval (by its start) the scheduler or a backfill may create: offline, the replay's last hour,
    # so that unpausing never schedules an hour the replay server does not have.
    end_date: datetime | None = Field(None, validation_alias="CANDLECAST_DAG_END_DATE")
    catchup: bool = Field(False, validation_alias="CANDLECAST_DAG_CATCHUP")
    retries: int = Field(3, validation_alias="CANDLECAST_DAG_RETRIES")
    retry_delay: timedelta = Field(timedelta(minutes=1), validation_alias="CANDLECAST_DAG_RETRY_DELAY_S")
    max_retry_delay: timedelta = timedelta(minutes=30)
    load_method: str = Field("dbt_manifest", validation_alias="CANDLECAST_COSMOS_LOAD_METHOD")
    test_behavior: str = Field("build", validation_alias="CANDLECAST_COSMOS_TEST_BEHAVIOR")
    execution_mode: str = Field("watcher", validation_alias="CANDLECAST_COSMOS_EXECUTION_MODE")
    # When set, DB settings come from the Airflow Connections ``{prefix}_loader``, ``{prefix}_transformer``
    # and ``{prefix}_ml`` instead of the environment (see ``connection_env``).
    conn_prefix: str | None = Field(None, validation_alias="CANDLECAST_AIRFLOW_CONN_PREFIX")
    # Every failed task of both DAGs is logged as an alert; with addresses here (comma-separated) it is also
    # mailed through the Airflow SMTP Connection ``alert_smtp_conn_id`` (see the README's "Health and alerts").
    alert_email: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="CANDLECAST_ALERT_EMAIL")
    alert_smtp_conn_id: str = Field("smtp_default", validation_alias="CANDLECAST_ALERT_SMTP_CONN_ID")
    alert_from: str | None = Field(None, validation_alias="CANDLECAST_ALERT_FROM")
    # A task failing the same way hour after hour (a model losing to persistence until Sunday's retrain) is
    # mailed once, then again every this many hours of data time while it lasts; its first success mails that
    # it is resolved. Every failure is still logged.
    alert_repeat_hours: int = Field(24, validation_alias="CANDLECAST_ALERT_REPEAT_HOURS")
    # Products per mapped task (the hourly extract and predict, the weekly train, evaluate and promote map over
    # batches of the run's products): one batch's failure leaves the others' work done, and workers share them.
    batch_size: int = Field(50, validation_alias="CANDLECAST_DAG_BATCH_SIZE")
    # The Celery queue every task of each DAG is sent to, so that one worker takes the weekly retrain and another
    # the hourly cycle (`make airflow EXECUTOR=celery`); unset: Airflow's default queue, which every worker takes.
    hourly_queue: str | None = Field(None, validation_alias="CANDLECAST_HOURLY_QUEUE")
    retrain_queue: str | None = Field(None, validation_alias="CANDLECAST_RETRAIN_QUEUE")
    dbt: DbtSettings = DbtSettings()

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _utc_date(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip() and info.field_name == "end_date":
            return None  # set but blank: no end
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError("must be an ISO date") from None
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @field_validator("retry_delay", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                raise ValueError("must be a number of seconds") from None
        return value

    @field_validator("retries")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0")
        return value

    @field_validator("alert_repeat_hours", "batch_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a whole number >= 1")
        return value

    @field_validator("load_method", "test_behavior", "execution_mode", mode="before")
    @classmethod
    def _normalised(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("load_method")
    @classmethod
    def _load_method(cls, value: str) -> str:
        if value not in LOAD_METHODS:
            raise ValueError(f"must be one of {LOAD_METHODS}")
        return value

    @field_validator("test_behavior")
    @classmethod
    def _test_behavior(cls, value: str) -> str:
        if value not in TEST_BEHAVIORS:
            raise ValueError(f"must be one of {TEST_BEHAVIORS}")
        return value

    @field_validator("execution_mode")
    @classmethod
    def _execution_mode(cls, value: str) -> str:
        if value not in EXECUTION_MODES:
            raise ValueError(f"must be one of {EXECUTION_MODES}")
        return value

    @field_validator("conn_prefix", "alert_from", "hourly_queue", "retrain_queue", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("alert_email", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(a.strip() for a in value.split(",") if a.strip())
        for address in value or ():
            # one plain address each: a header injection (newline) or a display name has no business here
            if not isinstance(address, str) or address.count("@") != 1 or any(c in address for c in " \r\n<>,;"):
                raise ValueError(f"must be comma-separated plain e-mail addresses ({address!r} is not one)")
        return value

    @field_validator("alert_smtp_conn_id")
    @classmethod
    def _conn_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name an Airflow Connection")
        return value.strip()

    @property
    def default_args(self) -> dict[str, object]:
        return {
            "owner": "candlecast",
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            # Doubles each time (1, 2, 4 ... min), capped: a flaky API or database gets room to recover.
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": self.max_retry_delay,
        }


def dag_settings(env: Mapping[str, str] | None = None) -> DagSettings:
    """Parse-time settings from env vars only (see the module docstring for why)."""
    return DagSettings.from_env(env)


def conn_id(prefix: str, role: Role) -> str:
    return f"{prefix}_{role}"


class ConnectionLike(Protocol):
    host: str | None
    port: int | None
    schema: str | None
    login: str | None
    password: str | None


def _connection_fields(role: Role) -> dict[str, tuple[str, str]]:
    """env var -> (the Airflow Connection's attribute, what applies when the Connection leaves it empty).

    An empty field gets the layer's own default, as if the variable were unset: one mapping for the task
    environment (``connection_env``) and the dbt tasks' rendered one (``connection_env_template``).
    """
    user_var, password_var = role_env_names(role)
    return {
        "CANDLECAST_DB_HOST": ("host", DEFAULT_DB_HOST),
        "CANDLECAST_DB_PORT": ("port", str(DEFAULT_DB_PORT)),
        "CANDLECAST_DB_SCHEMA": ("schema", DEFAULT_SCHEMA_BASE),
        user_var: ("login", role),
        password_var: ("password", ""),
    }


def connection_env(role: Role, conn: ConnectionLike) -> dict[str, str]:
    """The role's DB env vars from an Airflow Connection (looked up when a task runs)."""
    out = {}
    for var, (attr, default) in _connection_fields(role).items():
        value = getattr(conn, attr)
        out[var] = default if value is None or str(value).strip() == "" else str(value)
    return out


def connection_env_template(prefix: str, role: Role) -> dict[str, str]:
    """The same env as Jinja, rendered when a dbt task runs (not at parse); Airflow masks the password."""
    c = f"conn.{conn_id(prefix, role)}"
    return {var: f"{{{{ {c}.{attr} or {default!r} }}}}" for var, (attr, default) in _connection_fields(role).items()}
