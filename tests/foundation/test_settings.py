"""The one settings layer: env vars over the credentials file, one role's login, one error naming the variable."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from candlecast.settings import DbtSettings, SettingsError, dag_settings, db_settings, effective_env
from candlecast.settings.dags import connection_env, connection_env_template


def test_credentials_file_is_read_as_an_env_file_and_the_environment_wins(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.env"
    creds.write_text(
        "# generated\n"
        "export CANDLECAST_DB_HOST=db.internal\n"
        "CANDLECAST_DB_PORT=3500\n"
        "CANDLECAST_LOADER_PASSWORD='p#ss \"q\"'  # a comment\n"
        'CANDLECAST_ML_PASSWORD="a b"\n'
    )
    env = {"CANDLECAST_CREDENTIALS_FILE": str(creds), "CANDLECAST_DB_PORT": "3600"}
    loader = db_settings("loader", env)
    assert (loader.host, loader.port, loader.user) == ("db.internal", 3600, "loader")
    assert loader.password == 'p#ss "q"'
    assert db_settings("ml", env).password == "a b"
    assert effective_env(env)["CANDLECAST_DB_PORT"] == "3600"


def test_a_role_gets_its_own_login_only() -> None:
    env = {"CANDLECAST_CREDENTIALS_FILE": "/nonexistent", "CANDLECAST_LOADER_USER": "ld",
           "CANDLECAST_LOADER_PASSWORD": "pw-loader", "CANDLECAST_READER_PASSWORD": "pw-reader"}
    reader = db_settings("reader", env)
    assert (reader.user, reader.password) == ("reader", "pw-reader")
    assert "pw-reader" not in repr(reader)
    with pytest.raises(SettingsError, match="CANDLECAST_ML_PASSWORD is not set and /nonexistent does not define it"):
        db_settings("ml", env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANDLECAST_DB_PORT": "many"}, "CANDLECAST_DB_PORT must be a int, got 'many'"),
        ({"CANDLECAST_DB_PORT": "70000"}, r"CANDLECAST_DB_PORT must be a TCP port \(1-65535\), got 70000"),
    ],
)
def test_an_invalid_db_value_names_the_variable_and_the_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        db_settings("loader", {"CANDLECAST_CREDENTIALS_FILE": "/nonexistent", "CANDLECAST_LOADER_PASSWORD": "x", **env})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANDLECAST_DAG_CATCHUP": "maybe"}, "CANDLECAST_DAG_CATCHUP must be a boolean"),
        ({"CANDLECAST_COSMOS_LOAD_METHOD": "dbt_run"}, "CANDLECAST_COSMOS_LOAD_METHOD must be one of"),
        ({"CANDLECAST_DAG_START_DATE": "soon"}, "CANDLECAST_DAG_START_DATE must be an ISO date, got soon"),
        # an alert address that would add a mail header (or a display name) is refused, not sent
        ({"CANDLECAST_ALERT_EMAIL": "ops@example.com\nBcc: x@evil.example"},
         "CANDLECAST_ALERT_EMAIL must be comma-separated plain e-mail addresses"),
        ({"CANDLECAST_ALERT_EMAIL": "Ops <ops@example.com>"}, "CANDLECAST_ALERT_EMAIL must be comma-separated plain"),
        ({"CANDLECAST_ALERT_REPEAT_HOURS": "0"}, "CANDLECAST_ALERT_REPEAT_HOURS must be a whole number >= 1"),
        # a batch of no products would map the steps over nothing
        ({"CANDLECAST_DAG_BATCH_SIZE": "0"}, "CANDLECAST_DAG_BATCH_SIZE must be a whole number >= 1"),
    ],
)
def test_an_invalid_dag_value_names_the_variable_and_the_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        dag_settings(env)


def test_alert_mail_is_off_by_default_and_names_its_addresses_and_connection() -> None:
    assert dag_settings({}).alert_email == ()
    settings = dag_settings({"CANDLECAST_ALERT_EMAIL": " oncall@example.com, ops@example.com ,",
                             "CANDLECAST_ALERT_SMTP_CONN_ID": "mail_relay"})
    assert settings.alert_email == ("oncall@example.com", "ops@example.com")
    assert (settings.alert_smtp_conn_id, dag_settings({}).alert_smtp_conn_id) == ("mail_relay", "smtp_default")
    repeat = dag_settings({"CANDLECAST_ALERT_REPEAT_HOURS": "6"}).alert_repeat_hours
    assert (dag_settings({}).alert_repeat_hours, repeat) == (24, 6)


def test_the_dbt_executable_and_pool_come_from_their_variables() -> None:
    assert DbtSettings.from_env({"CANDLECAST_DBT_EXECUTABLE": "/opt/dbt"}).executable == Path("/opt/dbt")
    assert DbtSettings.from_env({}).pool == "candlecast_dbt"
    assert DbtSettings.from_env({"CANDLECAST_DBT_POOL": ""}).pool == "default_pool"
    # the one-slot pools whoever sets Airflow up creates: the dbt runs', the model tasks'; Airflow's own never
    assert list(DbtSettings.from_env({}).pools()) == ["candlecast_dbt", "candlecast_dbt_verdicts"]
    no_verdict_pool = DbtSettings.from_env({"CANDLECAST_DBT_VERDICT_POOL": " "})
    assert no_verdict_pool.verdict_pool == "default_pool" and list(no_verdict_pool.pools()) == ["candlecast_dbt"]


def test_an_airflow_connection_maps_like_the_unset_variables_in_both_paths() -> None:
    bare = SimpleNamespace(host=None, port=None, schema=None, login=None, password="pw")
    env = connection_env("transformer", bare)
    assert env == {"CANDLECAST_DB_HOST": "127.0.0.1", "CANDLECAST_DB_PORT": "3407",
                   "CANDLECAST_DB_SCHEMA": "candlecast", "CANDLECAST_TRANSFORMER_USER": "transformer",
                   "CANDLECAST_TRANSFORMER_PASSWORD": "pw"}
    settings = db_settings("transformer", {"CANDLECAST_CREDENTIALS_FILE": "/nonexistent", **env})
    assert (settings.host, settings.port, settings.schemas.base) == ("127.0.0.1", 3407, "candlecast")

    from jinja2 import Template

    rendered = {key: Template(value).render(conn={"cc_transformer": bare})
                for key, value in connection_env_template("cc", "transformer").items()}
    assert rendered == env


def test_the_api_settings_come_from_their_variables_and_keep_keys_secret() -> None:
    from candlecast.settings import api_settings

    default = api_settings({})
    assert (default.host, default.port, default.keys, default.cors_origins) == ("127.0.0.1", 8090, (), ())
    key = "0123456789abcdef-secret"
    configured = api_settings({"CANDLECAST_API_PORT": "8191", "CANDLECAST_API_KEYS": f" {key}, another-key-0123456 ",
                               "CANDLECAST_API_CORS_ORIGINS": "https://dash.example.org/"})
    assert configured.port == 8191 and configured.keys == (key, "another-key-0123456")
    assert configured.cors_origins == ("https://dash.example.org",)
    assert key not in repr(configured) and key not in str(configured)
    with pytest.raises(SettingsError, match=r"CANDLECAST_API_KEYS must hold keys of at least 16 .*got \(hidden\)"):
        api_settings({"CANDLECAST_API_KEYS": "short-key"})
    with pytest.raises(SettingsError, match="CANDLECAST_API_MAX_PAGE_SIZE must be >= CANDLECAST_API_DEFAULT_PAGE_SIZE"):
        api_settings({"CANDLECAST_API_DEFAULT_PAGE_SIZE": "500", "CANDLECAST_API_MAX_PAGE_SIZE": "100"})
    with pytest.raises(SettingsError, match="CANDLECAST_API_CORS_ORIGINS must be http"):
        api_settings({"CANDLECAST_API_CORS_ORIGINS": "dash.example.org"})
