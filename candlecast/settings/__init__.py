"""One settings layer: a typed model per concern, every default defined once, read from env vars.

- ``base``: the reader (env vars over the local credentials file) and the one error type, ``SettingsError``;
- ``db``: the database and one role's login; ``local``: the project's local MariaDB and Airflow;
- ``extract``, ``ml``, ``dbt``, ``dags``, ``api``: each part's own settings.

Each model's ``from_env()`` reads the environment once, at the edge (CLI, demo, DAG task), and the result is
passed down; constructing a model directly never reads the environment.
"""

from candlecast.settings.api import ApiSettings, api_settings
from candlecast.settings.base import (
    DEFAULT_LOCAL_DIR,
    REPO_ROOT,
    EnvSettings,
    SettingsError,
    credentials_file,
    effective_env,
    local_dir,
    read_env_file,
)
from candlecast.settings.dags import DagSettings, dag_settings
from candlecast.settings.db import ROLES, DbServer, DbSettings, Role, RoleLogin, Schemas, db_settings
from candlecast.settings.dbt import DbtSettings, dbt_settings
from candlecast.settings.extract import ExtractSettings
from candlecast.settings.local import LocalServices, local_services
from candlecast.settings.ml import MlSettings, ml_settings

__all__ = [
    "DEFAULT_LOCAL_DIR",
    "REPO_ROOT",
    "ROLES",
    "ApiSettings",
    "DagSettings",
    "DbServer",
    "DbSettings",
    "DbtSettings",
    "EnvSettings",
    "ExtractSettings",
    "LocalServices",
    "MlSettings",
    "Role",
    "RoleLogin",
    "Schemas",
    "SettingsError",
    "api_settings",
    "credentials_file",
    "dag_settings",
    "db_settings",
    "dbt_settings",
    "effective_env",
    "local_dir",
    "local_services",
    "ml_settings",
    "read_env_file",
]
