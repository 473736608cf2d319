"""Settings of the DAGs.

Two kinds, read at two different moments:

- ``DagSettings`` shape the DAGs (schedules, retries, how Cosmos renders dbt). They are read from env vars
  when a DAG file is parsed: a dictionary lookup, no I/O, no database, no Airflow Variable (a Variable read
  at parse time is a metadata-DB query on every parse).
- What a run works on (products, the model store, the database) is read inside the tasks, at run time, from
  Airflow Variables when set, else the same env vars the CLIs read (``runtime_*`` below).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# dags/candlecast_orchestration/config.py -> the repository root, without importing the project.
REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
PROFILES_YML = REPO_ROOT / "profiles.yml"
DEFAULT_DBT_EXECUTABLE = REPO_ROOT / ".venv-dbt" / "bin" / "dbt"
DEFAULT_MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"

HOURLY_DAG_ID = "candlecast_hourly"
RETRAIN_DAG_ID = "candlecast_weekly_retrain"

# Airflow Variables a task reads at run time (each falls back to the env var the CLIs read).
VAR_PRODUCTS = "candlecast_products"  # comma-separated, e.g. "BTC-USD,ETH-USD"
VAR_MODEL_STORE = "candlecast_model_store"

DBT_POOL_DESCRIPTION = "candlecast: one dbt run at a time across DAGs (they write the same tables)"

LOAD_METHODS = ("dbt_manifest", "dbt_ls")
TEST_BEHAVIORS = ("build", "after_each", "after_all", "none")


class DagConfigError(ValueError):
    """A DAG setting is invalid: the message names the variable and the value."""


@dataclass(frozen=True)
class DagSettings:
    hourly_schedule: str = "@hourly"
    retrain_schedule: str = "30 23 * * 0"
    # The bundled sample starts here; backfills before it have nothing to extract.
    start_date: datetime = datetime(2021, 12, 14, tzinfo=UTC)
    catchup: bool = False
    retries: int = 3
    retry_delay: timedelta = timedelta(minutes=1)
    max_retry_delay: timedelta = timedelta(minutes=30)
    dbt_project_dir: Path = DBT_PROJECT_DIR
    dbt_target: str = "main"  # the target profiles.yml defines
    dbt_executable: Path = DEFAULT_DBT_EXECUTABLE
    manifest_path: Path = DEFAULT_MANIFEST
    load_method: str = "dbt_manifest"
    test_behavior: str = "build"
    # When set, DB settings come from the Airflow Connections ``{prefix}_loader``, ``{prefix}_transformer``
    # and ``{prefix}_ml`` instead of the environment (see ``connection_env``).
    conn_prefix: str | None = None
    # Every dbt task of both DAGs takes a slot of this one-slot pool: the hourly and the weekly run both build
    # the feature tables, and two dbt runs writing one table collide (`__dbt_tmp already exists`).
    dbt_pool: str = "candlecast_dbt"

    def __post_init__(self) -> None:
        if self.load_method not in LOAD_METHODS:
            raise DagConfigError(f"CANDLECAST_COSMOS_LOAD_METHOD must be one of {LOAD_METHODS}, "
                                 f"got {self.load_method!r}")
        if self.test_behavior not in TEST_BEHAVIORS:
            raise DagConfigError(f"CANDLECAST_COSMOS_TEST_BEHAVIOR must be one of {TEST_BEHAVIORS}, "
                                 f"got {self.test_behavior!r}")
        if self.retries < 0:
            raise DagConfigError(f"CANDLECAST_DAG_RETRIES must be >= 0, got {self.retries}")

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


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise DagConfigError(f"{name} must be true or false, got {raw!r}")


def dag_settings(env: Mapping[str, str] | None = None) -> DagSettings:
    """Parse-time settings from env vars only (see the module docstring for why)."""
    env = os.environ if env is None else env
    d = DagSettings()
    try:
        retries = int(env.get("CANDLECAST_DAG_RETRIES", d.retries))
        retry_delay = timedelta(seconds=float(env.get("CANDLECAST_DAG_RETRY_DELAY_S", d.retry_delay.total_seconds())))
    except ValueError as exc:
        raise DagConfigError(f"CANDLECAST_DAG_RETRIES / CANDLECAST_DAG_RETRY_DELAY_S must be numbers: {exc}") from exc
    start = env.get("CANDLECAST_DAG_START_DATE")
    try:
        start_date = datetime.fromisoformat(start).replace(tzinfo=UTC) if start else d.start_date
    except ValueError as exc:
        raise DagConfigError(f"CANDLECAST_DAG_START_DATE must be an ISO date, got {start!r}") from exc
    return DagSettings(
        hourly_schedule=env.get("CANDLECAST_HOURLY_SCHEDULE", d.hourly_schedule),
        retrain_schedule=env.get("CANDLECAST_RETRAIN_SCHEDULE", d.retrain_schedule),
        start_date=start_date,
        catchup=_flag(env, "CANDLECAST_DAG_CATCHUP", d.catchup),
        retries=retries,
        retry_delay=retry_delay,
        dbt_project_dir=Path(env.get("CANDLECAST_DBT_PROJECT_DIR", str(d.dbt_project_dir))),
        dbt_target=env.get("CANDLECAST_DBT_TARGET", d.dbt_target),
        dbt_executable=Path(env.get("CANDLECAST_DBT_EXECUTABLE", str(d.dbt_executable))),
        manifest_path=Path(env.get("CANDLECAST_DBT_MANIFEST", str(d.manifest_path))),
        load_method=env.get("CANDLECAST_COSMOS_LOAD_METHOD", d.load_method).strip().lower(),
        test_behavior=env.get("CANDLECAST_COSMOS_TEST_BEHAVIOR", d.test_behavior).strip().lower(),
        conn_prefix=env.get("CANDLECAST_AIRFLOW_CONN_PREFIX", "").strip() or None,
        dbt_pool=env.get("CANDLECAST_DBT_POOL", d.dbt_pool).strip() or "default_pool",
    )


def conn_id(prefix: str, role: str) -> str:
    return f"{prefix}_{role}"


def connection_env_template(prefix: str, role: str) -> dict[str, str]:
    """The env a dbt task gets from an Airflow Connection, as Jinja rendered when the task runs (not at parse).

    Airflow masks connection passwords wherever rendered fields are shown.
    """
    c = f"conn.{conn_id(prefix, role)}"
    upper = role.upper()
    return {
        "CANDLECAST_DB_HOST": f"{{{{ {c}.host }}}}",
        "CANDLECAST_DB_PORT": f"{{{{ {c}.port or 3306 }}}}",
        "CANDLECAST_DB_SCHEMA": f"{{{{ {c}.schema or 'candlecast' }}}}",
        f"CANDLECAST_{upper}_USER": f"{{{{ {c}.login }}}}",
        f"CANDLECAST_{upper}_PASSWORD": f"{{{{ {c}.password }}}}",
    }
