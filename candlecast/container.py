"""The processes of the project's container image (``containers/Containerfile``): one entry per compose service.

    python -m candlecast.container mariadb | postgres | redis | airflow-init | api
    python -m candlecast.container airflow ARGS...     # one Airflow component: api-server, scheduler, celery worker...
    python -m candlecast.container as ROLE CMD...      # a one-off command holding that role's password only
    python -m candlecast.container health SERVICE      # the compose healthchecks
    python3 -m candlecast.container secrets DIR        # on the host, once: every secret file the compose file names

Secrets reach a container only as files under ``/run/secrets`` (compose secrets, from a folder outside the
repository): never in the image, the compose file, an env file or a command line. Each service is given only the
secrets it needs; its entry reads them as root, hands them on (a password into the environment of the one
process that uses it, through a pipe, or as a 0600 file of the service's user that Airflow reads with its
``_CMD`` options), and runs the service as an unprivileged user. So the read API holds the reader's password and
no other, Airflow's environment holds no secret at all (its tasks read the role Connections that ``airflow-init``
writes, as with ``make airflow``), and only the MariaDB container, which sets the roles up, sees all five.

Only the standard library is imported here at module level: the ``secrets`` command runs on a host that has no
project virtualenv (``make image`` and ``make compose-up`` need Debian's python3 alone).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

SECRETS_DIR = Path("/run/secrets")
# The unprivileged user of the image (uid 50000, as in Airflow's own images): Airflow and the read API run as it.
APP_USER = "candlecast"
DB_ROLES = ("admin", "loader", "transformer", "ml", "reader")
# The roles whose logins Airflow keeps as Connections (never the admin: set-up and test fixtures only).
CONNECTION_ROLES = ("loader", "transformer", "ml", "reader")
# Every secret the compose file names, each a file of its own (no trailing newline needed).
SECRET_NAMES = (
    *(f"db_{role}_password" for role in DB_ROLES),
    "postgres_password",  # the `airflow` login of Airflow's metadata database
    "redis_password",  # Celery's broker
    "airflow_fernet_key",  # encrypts Connections and Variables in the metadata database
    "airflow_secret_key",  # signs the log servers' requests ([api] secret_key)
    "airflow_jwt_secret",  # signs the tokens of the API and of the tasks' execution API
    "airflow_admin_password",  # the UI's `admin` login (Airflow's simple auth manager)
)
# What the image's entry runs (the compose file's `command:` names one, then its arguments).
SERVICES = ("mariadb", "postgres", "redis", "airflow-init", "airflow", "api", "as")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
METADATA_DB = "airflow"  # database and login of Airflow's metadata in the PostgreSQL container


class ContainerError(RuntimeError):
    """A service could not start: a secret is missing, a dependency never answered, a set-up step failed."""


# --- secrets ------------------------------------------------------------------------------------------------


def new_secret(name: str) -> str:
    """A fresh value for one secret; URL-safe, so it can sit in a connection URL as it is."""
    if name == "airflow_fernet_key":
        return base64.urlsafe_b64encode(os.urandom(32)).decode()  # Fernet's own format
    return secrets.token_urlsafe(32)


def make_secrets(folder: Path) -> list[str]:
    """Create, in a 0700 ``folder``, each secret file that does not exist yet (0600); returns the names made.

    Existing files are kept as they are: re-running changes nothing, and rotating one secret is deleting its
    file, running this again and restarting the services that read it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    made = []
    for name in SECRET_NAMES:
        path = folder / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_secret(name))
        made.append(name)
    return made


def read_secret(name: str, folder: Path | None = None) -> str:
    path = (SECRETS_DIR if folder is None else folder) / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ContainerError(f"secret {name!r} is not mounted at {path}: add it to this service's `secrets:` "
                             "in the compose file") from None
    if not value:
        raise ContainerError(f"secret {name!r} at {path} is empty")
    return value


def available_secrets(names: Sequence[str], folder: Path | None = None) -> dict[str, str]:
    """The secrets among ``names`` that this container was given (the compose file decides which)."""
    folder = SECRETS_DIR if folder is None else folder
    return {name: read_secret(name, folder) for name in names if (folder / name).exists()}


def role_password_env(given: Mapping[str, str]) -> dict[str, str]:
    """``CANDLECAST_<ROLE>_PASSWORD`` for each ``db_<role>_password`` secret given."""
    return {f"CANDLECAST_{role.upper()}_PASSWORD": given[f"db_{role}_password"]
            for role in DB_ROLES if f"db_{role}_password" in given}


def metadata_db_url(password: str, env: Mapping[str, str]) -> str:
    host, port = env.get("CANDLECAST_PG_HOST", "postgres"), env.get("CANDLECAST_PG_PORT", "5432")
    return f"postgresql+psycopg2://{METADATA_DB}:{quote(password, safe='')}@{host}:{port}/{METADATA_DB}"


def broker_url(password: str, env: Mapping[str, str]) -> str:
    host, port = env.get("CANDLECAST_REDIS_HOST", "redis"), env.get("CANDLECAST_REDIS_PORT", "6379")
    return f"redis://:{quote(password, safe='')}@{host}:{port}/0"


def airflow_secret_env(given: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Airflow's own secrets as its ``AIRFLOW__*`` settings, for the secrets this container was given.

    Celery's result backend is left to Airflow's default, the metadata database (``db+`` its URL).
    """
    out = {}
    if "postgres_password" in given:
        out["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_db_url(given["postgres_password"], env)
    if "redis_password" in given:
        out["AIRFLOW__CELERY__BROKER_URL"] = broker_url(given["redis_password"], env)
    for name, var in (("airflow_fernet_key", "AIRFLOW__CORE__FERNET_KEY"),
                      ("airflow_secret_key", "AIRFLOW__API__SECRET_KEY"),
                      ("airflow_jwt_secret", "AIRFLOW__API_AUTH__JWT_SECRET")):
        if name in given:
            out[var] = given[name]
    return out


# --- processes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> Account:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ContainerError(f"user {name!r} does not exist in this image") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def become(self) -> None:
        """Drop root for good (in this process, or in a child before it execs)."""
        if os.geteuid() == self.uid:
            return
        os.setgroups([])
        os.setgid(self.gid)
        os.setuid(self.uid)


def wait_for(host: str, port: int, what: str, timeout: float = 300.0) -> None:
    """Until ``host:port`` accepts a TCP connection (compose may start a service before what it needs)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ContainerError(f"{what} at {host}:{port} did not answer within {timeout:.0f}s: {exc}") from None
        time.sleep(1)


def _exec_as(account: Account, argv: Sequence[str], env: Mapping[str, str]) -> None:
    account.become()
    os.execvpe(argv[0], list(argv), {**env, "HOME": account.home, "USER": account.name})


def _run_as(account: Account, argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None,
            what: str = "") -> str:
    result = subprocess.run(list(argv), input=stdin, env={**env, "HOME": account.home}, capture_output=True,
                            text=True, preexec_fn=account.become if os.geteuid() != account.uid else None)
    if result.returncode != 0:
        raise ContainerError(f"{what or argv[0]} failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
    return result.stdout


def _supervise(proc: subprocess.Popen[bytes], on_stop: signal.Signals = signal.SIGTERM) -> int:
    """Wait for the service's process; SIGTERM/SIGINT to us is passed on as ``on_stop``. Returns its exit code."""

    def forward(_signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(on_stop)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return proc.wait()


# --- services -----------------------------------------------------------------------------------------------


def run_mariadb(env: Mapping[str, str]) -> int:
    """The project's MariaDB (``candlecast.mariadb run``), its five logins seeded from the secrets."""
    from candlecast import mariadb

    passwords = role_password_env(available_secrets([f"db_{role}_password" for role in DB_ROLES]))
    missing = [role for role in DB_ROLES if f"CANDLECAST_{role.upper()}_PASSWORD" not in passwords]
    if missing:
        raise ContainerError(f"the MariaDB container needs every role's password; missing: "
                             f"{', '.join(f'db_{role}_password' for role in missing)}")
    server = mariadb.local_server(env)
    mariadb.seed_credentials(server, passwords)  # only the server's own volume holds them, 0600, root's
    logging.getLogger("candlecast.mariadb").setLevel(logging.INFO)
    return mariadb.run(env)


def postgres_hba() -> str:
    """Who may connect: the superuser over the unix socket as the OS user; the ``airflow`` login with its password
    from anywhere on the network (scram-sha-256), to its own database only."""
    return (f"local all postgres peer\n"
            f"host {METADATA_DB} {METADATA_DB} all scram-sha-256\n")


def postgres_setup_sql(password: str) -> str:
    """The metadata login and database; re-run at every start (a changed secret is applied: a rotation)."""
    literal = "'" + password.replace("'", "''") + "'"
    return (
        f"select 'create role {METADATA_DB} login' where not exists "
        f"(select from pg_roles where rolname = '{METADATA_DB}')\\gexec\n"
        f"alter role {METADATA_DB} with login password {literal};\n"
        f"select 'create database {METADATA_DB} owner {METADATA_DB}' where not exists "
        f"(select from pg_database where datname = '{METADATA_DB}')\\gexec\n"
    )


def run_postgres(env: Mapping[str, str]) -> int:
    """Debian's PostgreSQL 15 in the foreground as ``postgres``: Airflow's metadata database."""
    account = Account.named("postgres")
    password = read_secret("postgres_password")
    root = Path(env.get("CANDLECAST_PG_DATA", "/var/lib/candlecast/postgres"))
    data, run_dir = root / "data", root / "run"
    bind, port = env.get("CANDLECAST_PG_BIND_ADDRESS", "0.0.0.0"), env.get("CANDLECAST_PG_PORT", "5432")
    for folder in (root, run_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, account.uid, account.gid)
    if not (data / "PG_VERSION").exists():
        _run_as(account, [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                          "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256"], env, what="initdb")
    hba = data / "pg_hba.conf"
    hba.write_text(postgres_hba(), encoding="utf-8")
    os.chown(hba, account.uid, account.gid)
    proc = subprocess.Popen(
        [str(PG_BIN / "postgres"), "-D", str(data), "-c", f"listen_addresses={bind}", "-c", f"port={port}",
         "-c", f"unix_socket_directories={run_dir}", "-c", "password_encryption=scram-sha-256"],
        env={**env, "HOME": account.home}, preexec_fn=account.become)
    deadline = time.monotonic() + 120
    ready = [str(PG_BIN / "pg_isready"), "-q", "-h", str(run_dir), "-p", port]
    while subprocess.run(ready, check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            raise ContainerError("PostgreSQL did not start; see the log above")
        time.sleep(0.5)
    # The password goes through psql's stdin, never its command line.
    _run_as(account, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(run_dir), "-p", port, "-U", "postgres",
                      "-d", "postgres"], env, stdin=postgres_setup_sql(password), what="the metadata login set-up")
    log.info("PostgreSQL on %s:%s, database %s ready", bind, port, METADATA_DB)
    return _supervise(proc, on_stop=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown


def redis_config(password: str, env: Mapping[str, str]) -> str:
    bind, port = env.get("CANDLECAST_REDIS_BIND_ADDRESS", "0.0.0.0"), env.get("CANDLECAST_REDIS_PORT", "6379")
    folder = env.get("CANDLECAST_REDIS_DATA", "/var/lib/candlecast/redis")
    return "\n".join([
        f"bind {bind}", f"port {port}", f"dir {folder}", f"requirepass {password}",
        # A broker's queue is rebuilt by the scheduler after a restart: snapshots are enough, no AOF.
        "appendonly no", "save 300 1", "protected-mode yes", "daemonize no", "logfile \"\"", "",
    ])


def run_redis(env: Mapping[str, str]) -> int:
    """Debian's redis-server as ``redis``: Celery's broker. Its config (with the password) is read from a pipe."""
    account = Account.named("redis")
    config = redis_config(read_secret("redis_password"), env).encode()
    read_end, write_end = os.pipe()
    os.write(write_end, config)  # a few hundred bytes: the pipe holds them before redis reads
    os.close(write_end)
    os.dup2(read_end, 0)
    os.close(read_end)
    _exec_as(account, ["redis-server", "-"], env)
    return 127  # exec does not return


def _airflow_env(env: Mapping[str, str], names: Sequence[str], home: Path, account: Account) -> dict[str, str]:
    """The environment of an Airflow process: no password, and each of Airflow's own secrets as a ``_CMD`` option
    (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD=cat FILE``) reading a 0600 file of the app user's, so that neither
    Airflow's environment nor its tasks' hold a secret, as with ``make airflow``."""
    child = {key: value for key, value in env.items() if not key.endswith("_PASSWORD")}
    folder = home / ".secrets"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chown(folder, account.uid, account.gid)
    for var, value in airflow_secret_env(available_secrets(names), env).items():
        path = folder / var.lower()
        _write_private(path, value, account)
        child[f"{var}_CMD"] = f"cat {path}"
    child["CANDLECAST_CREDENTIALS_FILE"] = os.devnull
    return child


AIRFLOW_SECRETS = ("postgres_password", "redis_password", "airflow_fernet_key", "airflow_secret_key",
                   "airflow_jwt_secret")


def _airflow_home(env: Mapping[str, str], account: Account) -> Path:
    home = Path(env.get("AIRFLOW_HOME", "/var/lib/candlecast/airflow"))
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, account.uid, account.gid)
    return home


def _write_private(path: Path, text: str, account: Account) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chown(path, account.uid, account.gid)


def _wait_for_metadata_db(env: Mapping[str, str]) -> None:
    wait_for(env.get("CANDLECAST_PG_HOST", "postgres"), int(env.get("CANDLECAST_PG_PORT", "5432")),
             "Airflow's metadata database (PostgreSQL)")


def run_airflow(args: Sequence[str], env: Mapping[str, str]) -> int:
    """One Airflow component as ``candlecast``, once ``airflow-init`` has migrated the metadata database."""
    if not args:
        raise ContainerError("airflow needs its arguments, e.g. `airflow scheduler`")
    account = Account.named(APP_USER)
    home = _airflow_home(env, account)
    child = _airflow_env(env, AIRFLOW_SECRETS, home, account)
    if (SECRETS_DIR / "airflow_admin_password").exists():
        # The simple auth manager reads {"user": "password"}; a file it finds complete, it leaves alone.
        passwords = home / "simple_auth_manager_passwords.json"
        _write_private(passwords, json.dumps({"admin": read_secret("airflow_admin_password")}), account)
        child["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords)
    _wait_for_metadata_db(env)
    if "AIRFLOW__CELERY__BROKER_URL_CMD" in child:
        wait_for(env.get("CANDLECAST_REDIS_HOST", "redis"), int(env.get("CANDLECAST_REDIS_PORT", "6379")),
                 "Celery's broker (Redis)")
    # Every component but the one-shot init waits for the schema the init migrates.
    _run_as(account, ["airflow", "db", "check-migrations", "--migration-wait-timeout", "600"], child,
            what="waiting for the metadata database's migrations (does airflow-init run?)")
    _exec_as(account, ["airflow", *args], child)
    return 127


def airflow_connections(values: Mapping[str, str], prefix: str) -> dict[str, dict[str, object]]:
    """The role Connections, in ``airflow connections import``'s format (``make airflow`` writes the same)."""
    from candlecast.airflow_local import role_connections

    return role_connections(values, prefix)


def run_airflow_init(env: Mapping[str, str]) -> int:
    """One-shot: migrate the metadata database, write the role Connections and the dbt pool, then exit 0."""
    account = Account.named(APP_USER)
    home = _airflow_home(env, account)
    child = _airflow_env(env, AIRFLOW_SECRETS, home, account)
    passwords = role_password_env(available_secrets([f"db_{role}_password" for role in CONNECTION_ROLES]))
    prefix = env.get("CANDLECAST_AIRFLOW_CONN_PREFIX", "").strip() or "candlecast"
    connections = airflow_connections({**env, **passwords}, prefix)
    _wait_for_metadata_db(env)
    _run_as(account, ["airflow", "db", "migrate"], child, what="airflow db migrate")
    # The passwords go through a 0600 file of the app user's, removed at once, never through a command line.
    with tempfile.TemporaryDirectory(dir=home, prefix=".init-") as folder:
        os.chown(folder, account.uid, account.gid)
        path = Path(folder) / "connections.json"
        _write_private(path, json.dumps(connections), account)
        _run_as(account, ["airflow", "connections", "import", "--overwrite", str(path)], child,
                what="airflow connections import")
    from candlecast.settings.dbt import DbtSettings

    pools = DbtSettings.from_env(child).pools()
    for pool, description in pools.items():
        _run_as(account, ["airflow", "pools", "set", pool, "1", description], child, what="airflow pools set")
    log.info("metadata database migrated; Connections %s; pools %s",
             ", ".join(sorted(connections)), ", ".join(pools) or "none")
    return 0


def run_api(env: Mapping[str, str]) -> int:
    """The read API and dashboard (``python -m serve``) as ``candlecast``, holding the reader's password only."""
    account = Account.named(APP_USER)
    child = {key: value for key, value in env.items() if not key.endswith("_PASSWORD")}
    child.update(role_password_env(available_secrets(["db_reader_password"])))
    if "CANDLECAST_READER_PASSWORD" not in child:
        raise ContainerError("the API container needs the secret db_reader_password")
    child["CANDLECAST_CREDENTIALS_FILE"] = os.devnull
    wait_for(env.get("CANDLECAST_DB_HOST", "mariadb"), int(env.get("CANDLECAST_DB_PORT", "3306")), "MariaDB")
    _exec_as(account, [sys.executable, "-m", "serve"], child)
    return 127


def run_as_role(args: Sequence[str], env: Mapping[str, str]) -> int:
    """A one-off command (a backfill, a retrain by hand) as ``candlecast``, holding one role's password: the
    ``db_<role>_password`` secret mounted for it (``candlecast.withenv`` does the same on a host)."""
    if len(args) < 2 or args[0] not in CONNECTION_ROLES:
        raise ContainerError(f"as needs a role ({', '.join(CONNECTION_ROLES)}) and a command, "
                             "e.g. `as loader python -m extract backfill --start ... --end ...`")
    role, command = args[0], list(args[1:])
    account = Account.named(APP_USER)
    child = {key: value for key, value in env.items() if not key.endswith("_PASSWORD")}
    child.update(role_password_env({f"db_{role}_password": read_secret(f"db_{role}_password")}))
    child["CANDLECAST_CREDENTIALS_FILE"] = os.devnull
    _exec_as(account, command, child)
    return 127


# --- healthchecks -------------------------------------------------------------------------------------------

# service -> (the env var of its port, its default); each answers on the container's own loopback or address
HEALTH_PORTS = {
    "mariadb": ("CANDLECAST_DB_PORT", "3306"),
    "postgres": ("CANDLECAST_PG_PORT", "5432"),
    "redis": ("CANDLECAST_REDIS_PORT", "6379"),
    "api": ("CANDLECAST_API_PORT", "8090"),
}


def _airflow_health(env: Mapping[str, str]) -> dict[str, object] | None:
    url = f"http://127.0.0.1:{env.get('AIRFLOW__API__PORT', '8080')}/api/v2/monitor/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            answer = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


AIRFLOW_COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")


def health(service: str, env: Mapping[str, str]) -> bool:
    """Does the service answer? A TCP connect for the servers; the Airflow API server's health answer for
    ``airflow-apiserver``, and that answer saying every component is healthy for ``airflow``."""
    if service in ("airflow-apiserver", "airflow"):
        answer = _airflow_health(env)
        if answer is None or service == "airflow-apiserver":
            return answer is not None
        parts = [answer.get(component) for component in AIRFLOW_COMPONENTS]
        return all(isinstance(part, dict) and part.get("status") == "healthy" for part in parts)
    if service not in HEALTH_PORTS:
        raise ContainerError(f"no healthcheck for {service!r}; one of airflow, airflow-apiserver, "
                             f"{', '.join(HEALTH_PORTS)}")
    var, default = HEALTH_PORTS[service]
    try:
        with socket.create_connection(("127.0.0.1", int(env.get(var, default))), timeout=3):
            return True
    except OSError:
        return False


# --- command line -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m candlecast.container", description=__doc__.split("\n")[0])
    parser.add_argument("service", choices=[*SERVICES, "health", "secrets"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="airflow: its arguments; as: the role, then the "
                                                               "command; health: the service; secrets: the folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    env = dict(os.environ)
    try:
        if args.service == "secrets":
            if len(args.args) != 1:
                parser.error("secrets needs the folder, e.g. `secrets ~/.config/candlecast/compose-secrets`")
            made = make_secrets(Path(args.args[0]).expanduser())
            print(f"secrets in {args.args[0]}: " + (f"created {', '.join(made)}" if made else "all present"))
            return 0
        if args.service == "health":
            if len(args.args) != 1:
                parser.error("health needs the service, e.g. `health mariadb`")
            return 0 if health(args.args[0], env) else 1
        if args.service == "airflow":
            return run_airflow(args.args, env)
        if args.service == "as":
            return run_as_role(args.args, env)
        runners = {"mariadb": run_mariadb, "postgres": run_postgres, "redis": run_redis,
                   "airflow-init": run_airflow_init, "api": run_api}
        return runners[args.service](env)
    except ContainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
