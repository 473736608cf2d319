"""The container files hold together, without building anything (``make image`` / ``make compose-up`` do, slowly).

What a user of ``containers/`` relies on: every secret a service mounts is declared and comes from a folder
outside the repository; no secret is written in the compose files, the Containerfile or a command; each service
gets only the secrets its job needs; the build context leaves local state and credentials out; the overrides
name services that exist; the secrets are made once, private, and reach Airflow as working URLs.
"""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from candlecast import container
from candlecast.mariadb import MariaDBError, local_server

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = REPO_ROOT / "containers"
AIRFLOW_OWN = {"postgres_password", "redis_password", "airflow_fernet_key", "airflow_secret_key",
               "airflow_jwt_secret", "airflow_admin_password"}


def _compose(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((CONTAINERS / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _services(name: str) -> dict[str, dict[str, Any]]:
    services = _compose(name)["services"]
    assert isinstance(services, dict)
    return services


def test_every_mounted_secret_is_declared_and_read_from_the_secrets_folder_outside_the_repo() -> None:
    compose = _compose("compose.yaml")
    declared = compose["secrets"]
    assert set(declared) == set(container.SECRET_NAMES)  # the entry and the compose file name the same secrets
    for name, spec in declared.items():
        assert spec["file"].startswith("${CANDLECAST_SECRETS_DIR:?"), name
        assert spec["file"].endswith(f"/{name}"), name
    for service, spec in compose["services"].items():
        assert set(spec.get("secrets", [])) <= set(declared), service


def test_each_service_holds_only_the_secrets_its_job_needs() -> None:
    services = _services("compose.yaml")
    secrets = {name: set(spec.get("secrets", [])) for name, spec in services.items()}
    role_passwords = {f"db_{role}_password" for role in container.DB_ROLES}
    assert secrets["mariadb"] == role_passwords  # set-up: it writes every role's password into the server
    assert secrets["api"] == {"db_reader_password"}
    assert secrets["postgres"] == {"postgres_password"}
    assert secrets["redis"] == {"redis_password"}
    # The init writes the role Connections (never the admin's); the running components hold no role's password.
    assert secrets["airflow-init"] - AIRFLOW_OWN == role_passwords - {"db_admin_password"}
    components = [name for name in services if name.startswith("airflow-") and name != "airflow-init"]
    assert len(components) == 6  # API server, scheduler, DAG processor, triggerer, two workers
    for name in components:
        assert secrets[name] <= AIRFLOW_OWN, name
    assert [name for name, held in secrets.items() if "db_admin_password" in held] == ["mariadb"]


SECRET_WORDS = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$|TOKEN", re.IGNORECASE)
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


@pytest.mark.parametrize("name", ["compose.yaml", "compose.offline.yaml", "compose.hostnet.yaml",
                                  "compose.offline.hostnet.yaml"])
def test_no_secret_is_written_in_a_compose_file(name: str) -> None:
    for service, spec in _services(name).items():
        environment = spec.get("environment", {})
        assert isinstance(environment, dict), f"{name}: {service}: environment as a mapping"
        assert [var for var in environment if SECRET_WORDS.search(var)] == [], f"{name}: {service}"
        for text in _strings({k: v for k, v in spec.items() if k != "secrets"}):
            assert not CREDENTIALS_IN_URL.search(text), f"{name}: {service}: {text}"


def test_the_image_is_built_without_local_state_or_secrets() -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".containerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".local", ".venv", ".venv-dbt", "**/*.env", "**/credentials*"} <= ignored
    containerfile = (CONTAINERS / "Containerfile").read_text(encoding="utf-8")
    code = [line for line in containerfile.splitlines() if not line.lstrip().startswith("#")]
    assert [line for line in code if re.search(r"(PASSWORD|SECRET|FERNET_KEY|JWT)\w*=[^\s\\]", line)] == []
    # The one password variable set at build time is the empty one `dbt parse` needs to render its profile.
    assert re.findall(r"CANDLECAST_TRANSFORMER_PASSWORD=(\S*)", containerfile) == [""]
    # Every service's command is one the image's entry runs.
    for service, spec in _services("compose.yaml").items():
        assert spec["command"][0] in container.SERVICES, service


@pytest.mark.parametrize("key", ["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME",
                                 "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"])
def test_the_deployments_tune_airflow_as_the_local_one_does(key: str) -> None:
    from candlecast.airflow_local import airflow_env, local_airflow

    local = airflow_env(local_airflow({}), {})[key]
    compose = _compose("compose.yaml")["x-airflow-env"][key]
    section, option = key.removeprefix("AIRFLOW__").lower().split("__")
    helm = yaml.safe_load((CONTAINERS / "kubernetes" / "airflow-values.yaml").read_text(encoding="utf-8"))
    assert float(compose) == float(helm["config"][section][option]) == float(local)


def test_the_overrides_only_adjust_services_the_base_file_defines() -> None:
    base = set(_services("compose.yaml"))
    offline = set(_services("compose.offline.yaml"))
    assert set(_services("compose.hostnet.yaml")) <= base
    assert offline - base == {"replay"}
    assert set(_services("compose.offline.hostnet.yaml")) <= offline - base
    # On the host's network every server binds the loopback only.
    hostnet = _services("compose.hostnet.yaml")
    for service, var in (("mariadb", "CANDLECAST_DB_BIND_ADDRESS"), ("postgres", "CANDLECAST_PG_BIND_ADDRESS"),
                         ("redis", "CANDLECAST_REDIS_BIND_ADDRESS"), ("api", "CANDLECAST_API_HOST"),
                         ("airflow-apiserver", "AIRFLOW__API__HOST")):
        assert hostnet[service]["environment"][var] == "127.0.0.1", service
    assert all(spec["network_mode"] == "host" for spec in hostnet.values())


def test_secrets_are_made_once_private_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    assert container.make_secrets(folder) == list(container.SECRET_NAMES)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    values = {}
    for name in container.SECRET_NAMES:
        path = folder / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        values[name] = path.read_text()
        assert len(values[name]) >= 40, name
    assert len(base64.urlsafe_b64decode(values["airflow_fernet_key"])) == 32  # what Fernet accepts
    assert len(set(values.values())) == len(values)
    (folder / "redis_password").unlink()  # a rotation: delete one, run again
    assert container.make_secrets(folder) == ["redis_password"]
    assert all((folder / n).read_text() == values[n] for n in container.SECRET_NAMES if n != "redis_password")


def test_airflow_reaches_its_databases_with_the_secrets_whatever_characters_they_hold() -> None:
    from sqlalchemy.engine import make_url

    password = "p@ss/w:rd%?#"
    env = {"CANDLECAST_PG_HOST": "postgres", "CANDLECAST_PG_PORT": "5432", "CANDLECAST_REDIS_HOST": "redis"}
    given = {"postgres_password": password, "redis_password": password, "airflow_fernet_key": "k"}
    out = container.airflow_secret_env(given, env)
    url = make_url(out["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg2", "airflow", password, "postgres", 5432, "airflow")
    from urllib.parse import unquote, urlsplit

    broker = urlsplit(out["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port, unquote(broker.password or "")) == (
        "redis", "redis", 6379, password)
    assert out["AIRFLOW__CORE__FERNET_KEY"] == "k"
    # Only what was given: a component without the broker's secret gets no broker URL.
    assert set(container.airflow_secret_env({"postgres_password": "x"}, env)) == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"}


def test_a_missing_secret_names_itself_and_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(container.ContainerError, match=r"db_reader_password.*secrets:"):
        container.read_secret("db_reader_password", tmp_path)


def test_the_local_server_binds_other_addresses_only_with_tls_or_inside_the_compose_network(tmp_path: Path) -> None:
    env = {"CANDLECAST_LOCAL_DIR": str(tmp_path), "CANDLECAST_DB_BIND_ADDRESS": "0.0.0.0",
           "CANDLECAST_CREDENTIALS_FILE": "/dev/null"}
    with pytest.raises(MariaDBError, match="CANDLECAST_DB_TLS=1"):
        local_server(env)
    server = local_server({**env, "CANDLECAST_DB_PRIVATE_NETWORK": "1"})
    assert (server.bind_address, server.tls, server.private_network) == ("0.0.0.0", False, True)


def test_the_postgres_set_up_quotes_the_password_and_can_run_again() -> None:
    sql = container.postgres_setup_sql("it's")
    assert "password 'it''s'" in sql
    assert sql.count("where not exists") == 2  # creating the login and the database is skipped when they exist
    assert container.postgres_hba().splitlines() == ["local all postgres peer",
                                                    "host airflow airflow all scram-sha-256"]


def test_airflow_environment_holds_commands_that_read_its_secrets_never_the_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import shlex
    import subprocess

    secrets_dir = tmp_path / "run-secrets"
    container.make_secrets(secrets_dir)
    values = {name: (secrets_dir / name).read_text() for name in container.SECRET_NAMES}
    me = container.Account("me", os.getuid(), os.getgid(), str(tmp_path))
    env = {"CANDLECAST_PG_HOST": "postgres", "CANDLECAST_LOADER_PASSWORD": "leaked", "PATH": "/usr/bin:/bin"}
    monkeypatch.setattr(container, "SECRETS_DIR", secrets_dir)  # /run/secrets in a container
    child = container._airflow_env(env, container.AIRFLOW_SECRETS, tmp_path, me)
    held = "\n".join(f"{k}={v}" for k, v in child.items())
    assert not [name for name, value in values.items() if value in held]
    assert "CANDLECAST_LOADER_PASSWORD" not in child  # a stray role password is never passed on to Airflow
    commands = {k: v for k, v in child.items() if k.endswith("_CMD")}
    assert set(commands) == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", "AIRFLOW__CELERY__BROKER_URL_CMD",
                             "AIRFLOW__CORE__FERNET_KEY_CMD", "AIRFLOW__API__SECRET_KEY_CMD",
                             "AIRFLOW__API_AUTH__JWT_SECRET_CMD"}
    # What Airflow gets when it runs them (shlex-split, no shell, as Airflow does).
    read = {k: subprocess.run(shlex.split(v), capture_output=True, text=True, check=True).stdout
            for k, v in commands.items()}
    assert read["AIRFLOW__CORE__FERNET_KEY_CMD"] == values["airflow_fernet_key"]
    assert values["postgres_password"] in read["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD"]
    for path in (tmp_path / ".secrets").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
