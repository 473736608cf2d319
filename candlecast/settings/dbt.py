"""Where dbt is and what it runs on: one executable (``CANDLECAST_DBT_EXECUTABLE``), the project, the target.

dbt lives in its own virtualenv (``.venv-dbt``: dbt-mysql 1.7 pins cannot coexist with Airflow 3), so every
caller (the dbt runner, Cosmos) starts this executable as a subprocess. The connection itself is not here:
``profiles.yml`` reads the ``transformer`` role's variables with ``env_var()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from candlecast.settings.base import REPO_ROOT, EnvSettings

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
PROFILES_DIR = REPO_ROOT
DEFAULT_DBT_EXECUTABLE = REPO_ROOT / ".venv-dbt" / "bin" / "dbt"
DEFAULT_MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"
DEFAULT_TARGET = "main"  # the one target profiles.yml defines

# Every dbt task of both DAGs takes a slot of this one-slot Airflow pool: the hourly and the weekly run both
# build the feature tables, and two dbt runs writing one table collide (`__dbt_tmp already exists`).
DEFAULT_POOL = "candlecast_dbt"
POOL_DESCRIPTION = "candlecast: one dbt run at a time across DAGs (they write the same tables)"
# Each Cosmos group's model tasks (each reads its model's result from the group's build, beside the run's next step)
# take a slot of this one-slot pool: one at a time, they leave that step the second core (a real hourly run took
# 1.8 s for predict instead of 2.35 s beside three of them, bench/bench_dags.py).
DEFAULT_VERDICT_POOL = "candlecast_dbt_verdicts"
VERDICT_POOL_DESCRIPTION = "candlecast: one dbt model task at a time, beside the step the run waits for"
NO_POOL = "default_pool"  # Airflow's own: what an empty CANDLECAST_DBT_POOL (or _VERDICT_POOL) opts into
# The --vars of every dbt command of the hourly cycle (the cycle command's steps and the hourly DAG's): the tests of
# the big hourly tables read the hours the run rewrote (dbt_project/macros/recent_rows.sql), so the hourly cost
# stays flat as history grows; the weekly build tests every row. One set for all the hour's dbt commands: dbt's
# partial parse starts over whenever the vars differ from the last command's (about 1 s per command here).
HOURLY_DBT_VARS: dict[str, str] = {"tests_scope": "recent"}


class DbtSettings(EnvSettings):
    """``CANDLECAST_DBT_EXECUTABLE``, ``CANDLECAST_DBT_PROJECT_DIR``, ``CANDLECAST_DBT_TARGET``,
    ``CANDLECAST_DBT_MANIFEST``, ``CANDLECAST_DBT_POOL``, ``CANDLECAST_DBT_VERDICT_POOL``."""

    executable: Path = Field(DEFAULT_DBT_EXECUTABLE, validation_alias="CANDLECAST_DBT_EXECUTABLE")
    project_dir: Path = Field(DBT_PROJECT_DIR, validation_alias="CANDLECAST_DBT_PROJECT_DIR")
    profiles_dir: Path = PROFILES_DIR
    target: str = Field(DEFAULT_TARGET, validation_alias="CANDLECAST_DBT_TARGET")
    manifest_path: Path = Field(DEFAULT_MANIFEST, validation_alias="CANDLECAST_DBT_MANIFEST")
    pool: str = Field(DEFAULT_POOL, validation_alias="CANDLECAST_DBT_POOL")
    verdict_pool: str = Field(DEFAULT_VERDICT_POOL, validation_alias="CANDLECAST_DBT_VERDICT_POOL")

    blank_is_a_value = frozenset({"CANDLECAST_DBT_POOL", "CANDLECAST_DBT_VERDICT_POOL"})

    @field_validator("pool", "verdict_pool", mode="before")
    @classmethod
    def _blank_pool_is_no_pool(cls, value: Any) -> Any:
        return (value.strip() or NO_POOL) if isinstance(value, str) else value

    def pools(self) -> dict[str, str]:
        """The one-slot Airflow pools the DAGs' tasks take (name: description), for whoever sets up Airflow."""
        wanted = {self.pool: POOL_DESCRIPTION, self.verdict_pool: VERDICT_POOL_DESCRIPTION}
        return {name: text for name, text in wanted.items() if name != NO_POOL}

    @property
    def profiles_yml(self) -> Path:
        return self.profiles_dir / "profiles.yml"


def dbt_settings(env: Mapping[str, str] | None = None) -> DbtSettings:
    return DbtSettings.from_env(env)
