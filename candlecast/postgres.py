"""The project's own PostgreSQL, Airflow's metadata database: Debian's ``postgres`` run as a plain background process.

Like ``candlecast.mariadb``: the cluster lives under ``$CANDLECAST_LOCAL_DIR/postgres`` (default
``.local/postgres``), the server listens on 127.0.0.1 only, on ``CANDLECAST_PG_PORT`` (default 5407, so a system
server on 5432 does not clash), and ``start`` is idempotent: it initialises the cluster once, generates the
``airflow`` role's password once (into a 0600 file), and re-applies the role and its database every time.

Started by root, the server runs as Debian's unprivileged ``postgres`` user (PostgreSQL refuses to run as root):
it owns the cluster and its socket folder, nothing else; the password file stays root's. Set-up (role,
databases) is done by that OS user over the unix socket (``peer`` authentication, as the cluster's superuser),
never with a password; TCP connections need the role's password (``scram-sha-256``), and the role is no superuser.

The password never appears on a command line or in a log: the server is told the role's SCRAM verifier (a salted
hash, not the password), and clients read the password from the 0600 file, a libpq password file
(``127.0.0.1:*:*:airflow:PASSWORD``) named in the connection URL (``passfile=...``), so Airflow's
``sql_alchemy_conn`` holds no secret.

Layout under ``.local/postgres``: ``pgpass`` (0600), ``data/`` (the cluster; ``postmaster.pid`` in it), ``run/``
(the unix socket), ``postgres.log``.

    python -m candlecast.postgres start|stop|status|url
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import hmac
import logging
import os
import pwd
import re
import secrets
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from candlecast import pidfile
from candlecast.settings import LocalServices
from candlecast.settings.local import DEFAULT_AIRFLOW_DB

log = logging.getLogger(__name__)

# Debian's postgresql package creates this system user; root never runs the server (PostgreSQL refuses to).
SERVER_OS_USER = "postgres"
HOST = "127.0.0.1"
# The one login role Airflow uses; it owns Airflow's databases and nothing else.
AIRFLOW_ROLE = "airflow"
DEBIAN_BIN_ROOT = Path("/usr/lib/postgresql")
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be initialised, started, set up or stopped."""


@dataclass(frozen=True)
class LocalPostgres:
    root: Path  # .local/postgres
    port: int
    host: str = HOST

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        """Written by the server into its cluster: pid, then (line 7) its shared memory, (line 8) its status."""
        return self.datadir / "postmaster.pid"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def socket_dir(self) -> Path:
        # A unix socket path must fit in 108 bytes (the name is ".s.PGSQL.<port>"); deep checkouts exceed that.
        if len(str(self.run_dir)) < 85:
            return self.run_dir
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"candlecast-pg-{digest}"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def passfile(self) -> Path:
        """The 0600 libpq password file holding the generated password of the ``airflow`` role."""
        return self.root / "pgpass"

    @property
    def identity(self) -> pidfile.Identity:
        """What this cluster's server process looks like (checked before any signal)."""
        return pidfile.Identity(os.path.realpath(binary("postgres")), ("-D", str(self.datadir)))

    def url(self, database: str = DEFAULT_AIRFLOW_DB, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL for ``database`` as the ``airflow`` role, with no secret in it: libpq reads the password
        from ``passfile``. ``driver="psycopg_async"`` gives the asyncio flavour of the same driver."""
        _check_name(database)
        return (f"postgresql+{driver}://{AIRFLOW_ROLE}@{self.host}:{self.port}/{database}"
                f"?passfile={self.passfile}")


def local_postgres(env: Mapping[str, str] | None = None) -> LocalPostgres:
    local = LocalServices.from_env(env)
    return LocalPostgres(root=local.postgres_dir.resolve(), port=local.pg_port)


def _check_name(database: str) -> None:
    if not _DB_NAME.match(database):
        raise PostgresError(f"database name {database!r} is not a plain lower-case identifier")


def bin_dir() -> Path:
    """Debian installs the server's programs under /usr/lib/postgresql/<major>/bin (not on PATH): the newest."""
    versions = sorted((p for p in DEBIAN_BIN_ROOT.glob("*/bin/postgres") if p.parent.parent.name.isdigit()),
                      key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise PostgresError(f"no PostgreSQL server under {DEBIAN_BIN_ROOT}: install Debian's postgresql "
                            "(`make deps` does)")
    return versions[-1].parent


def binary(name: str) -> str:
    return str(bin_dir() / name)


def _server_account() -> pwd.struct_passwd | None:
    """The OS user the server runs as when started by root; None when started by anyone else (runs as them)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresError(
            f"started as root, PostgreSQL runs as the unprivileged user {SERVER_OS_USER!r}, which does not exist: "
            "install Debian's postgresql (it creates the user), or start as a non-root user"
        ) from None


@dataclass(frozen=True)
class _RunAs:
    """``subprocess`` arguments that run a program as the server's OS user (all None when we are that user)."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None

    @classmethod
    def of(cls, account: pwd.struct_passwd | None) -> _RunAs:
        return cls() if account is None else cls(account.pw_uid, account.pw_gid, [])


def _server_env(account: pwd.struct_passwd | None) -> dict[str, str]:
    """A small, known environment for the server's programs: nothing of ours (no credential) leaks into them."""
    home = account.pw_dir if account is not None else os.environ.get("HOME", "/")
    return {"PATH": os.defpath, "HOME": home, "LC_ALL": "C", "TZ": "UTC"}


# --- the password ------------------------------------------------------------------------------------------------

def _read_passfile(server: LocalPostgres) -> str | None:
    try:
        for line in server.passfile.read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if len(fields) == 5 and fields[3] == AIRFLOW_ROLE and fields[4]:
                return fields[4]
    except FileNotFoundError:
        return None
    return None


def _ensure_password(server: LocalPostgres) -> str:
    """The ``airflow`` role's password, generated into the 0600 libpq password file on first use."""
    server.root.mkdir(parents=True, exist_ok=True)
    password = _read_passfile(server)
    if password is None:
        password = secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: nothing libpq's file format would need escaped
        tmp = server.passfile.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{HOST}:*:*:{AIRFLOW_ROLE}:{password}\n")
        os.replace(tmp, server.passfile)
    os.chmod(server.passfile, 0o600)  # libpq ignores a password file others can read
    return password


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677), computed here so that the
    server, its statement log and ``pg_stat_activity`` only ever see a salted hash."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# --- the running server ------------------------------------------------------------------------------------------

def _pid_file_lines(server: LocalPostgres) -> list[str]:
    try:
        return server.pid_file.read_text(errors="replace").splitlines()
    except (FileNotFoundError, PermissionError):
        return []


def running_pid(server: LocalPostgres) -> int | None:
    """The pid of this cluster's postmaster while that process exists (ready or not); None once it is gone."""
    return pidfile.our_pid(server.pid_file, server.identity)


def _ready(server: LocalPostgres) -> bool:
    """The postmaster says it accepts connections (line 8 of its pid file, PostgreSQL 10 and later) and answers.

    The pid file alone is not enough: right after a SIGKILL the process still looks alive for a moment (the
    signal not yet delivered) while its pid file still says "ready".
    """
    lines = _pid_file_lines(server)
    return len(lines) >= 8 and lines[7].strip() == "ready" and running_pid(server) is not None \
        and _answers(server)


# The protocol's SSLRequest: any live server replies one byte, "S" or "N", before anything else is sent.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def _answers(server: LocalPostgres) -> bool:
    """The server on our own unix socket replies to an SSLRequest (a port could be answered by another server)."""
    path = server.socket_dir / f".s.PGSQL.{server.port}"
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1)
            conn.connect(str(path))
            conn.sendall(_SSL_REQUEST)
            return conn.recv(1) in (b"S", b"N")
    except OSError:
        return False


def _shared_memory_in_use(server: LocalPostgres) -> bool:
    """A dead postmaster's children still hold its shared memory (line 7: key and id) while they exit.

    PostgreSQL refuses to start until they are gone; this is its interlock, read from /proc/sysvipc/shm, so that
    removing the stale pid file (which names a dead or zombie postmaster PostgreSQL would take for alive) keeps it.
    """
    lines = _pid_file_lines(server)
    if len(lines) < 7 or len(lines[6].split()) != 2:
        return False
    shmid = lines[6].split()[1]
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()
    except OSError:
        return False
    header = rows[0].split() if rows else []
    if "shmid" not in header or "nattch" not in header:
        return False
    for row in rows[1:]:
        fields = row.split()
        if fields[header.index("shmid")] == shmid:
            return int(fields[header.index("nattch")]) > 0
    return False


def _await_predecessor(server: LocalPostgres, deadline: float, timeout: float) -> bool:
    """Wait until the pid file's server is ready, or gone with its children; returns whether it is ready.

    A live pid that is not ready is starting (crash recovery) or stopping: it settles within the timeout, or
    this says which pid is stuck. A dead one's children take a moment to notice and exit.
    """
    while True:
        pid = running_pid(server)
        if pid is None and not _shared_memory_in_use(server):
            return False
        if pid is not None and _ready(server):
            return True
        if time.monotonic() > deadline:
            what = (f"postgres pid {pid} (pid file {server.pid_file}) is not ready" if pid is not None else
                    f"the children of a dead postgres still hold its shared memory (pid file {server.pid_file})")
            raise PostgresError(f"{what} after {timeout:.0f}s; if it is hung, kill it and start again")
        time.sleep(0.1)


def _prepare_folders(server: LocalPostgres, account: pwd.struct_passwd | None) -> None:
    """The cluster and the socket folder are the server's; ``root`` (the password file) stays ours."""
    server.root.mkdir(parents=True, exist_ok=True)
    for folder in (server.datadir, server.socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
    os.chmod(server.datadir, 0o700)  # PostgreSQL refuses a cluster others can read
    os.chmod(server.socket_dir, 0o755)
    if account is None:
        return
    # The folders we made for it (.local, .local/postgres) must let it through; a umask of 077 would not.
    for folder in (server.root.parent, server.root):
        st = folder.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IXOTH:
            os.chmod(folder, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
    blocked = next((f for f in [*reversed(server.root.parents), server.root] if not _enterable(f, account)), None)
    if blocked is not None:
        raise PostgresError(
            f"PostgreSQL runs as the unprivileged user {account.pw_name!r}, which cannot enter {blocked} "
            f"(mode {stat.S_IMODE(blocked.stat().st_mode):o}) on the way to {server.root}: let it through "
            f"(chmod o+x {blocked}) or put the data elsewhere (CANDLECAST_LOCAL_DIR=/path/it/can/reach)"
        )
    for folder in (server.datadir, server.socket_dir):
        if folder.stat().st_uid != account.pw_uid:
            for parent, dirs, files in os.walk(folder):
                for name in dirs + files:
                    os.lchown(os.path.join(parent, name), account.pw_uid, account.pw_gid)
            os.chown(folder, account.pw_uid, account.pw_gid)


def _enterable(folder: Path, account: pwd.struct_passwd) -> bool:
    import grp

    st = folder.stat()
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    return bool(st.st_mode & (stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH))


def _initialise(server: LocalPostgres, account: pwd.struct_passwd | None) -> None:
    if (server.datadir / "PG_VERSION").exists():
        return
    # The superuser is named after the OS user that runs the server: it logs in over the socket (peer) only.
    cmd = [binary("initdb"), "-D", str(server.datadir), "--encoding=UTF8", "--no-locale",
           "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions"]
    run_as = _RunAs.of(account)
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=server.root, env=_server_env(account),
                            user=run_as.user, group=run_as.group, extra_groups=run_as.extra_groups)
    if result.returncode != 0:
        raise PostgresError(f"initdb failed in {server.datadir}: {(result.stderr or result.stdout).strip()[-2000:]}")


def _server_args(server: LocalPostgres) -> list[str]:
    settings = {
        "port": str(server.port),
        "listen_addresses": server.host,
        "unix_socket_directories": str(server.socket_dir),
        "timezone": "UTC",
        "log_timezone": "UTC",
        # Airflow's components pool their connections; two instances (a developer's, the tests') fit easily.
        "max_connections": "200",
        "password_encryption": "scram-sha-256",
    }
    args = [binary("postgres"), "-D", str(server.datadir)]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    return args


def _psql(server: LocalPostgres, sql: str, database: str = "postgres") -> str:
    """Run ``sql`` as the cluster's superuser over the unix socket (peer authentication); returns its output."""
    account = _server_account()
    cmd = [binary("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(server.socket_dir),
           "-p", str(server.port), "-d", database]
    run_as = _RunAs.of(account)
    result = subprocess.run(cmd, input=sql, capture_output=True, text=True, cwd=server.root,
                            env=_server_env(account), user=run_as.user, group=run_as.group,
                            extra_groups=run_as.extra_groups)
    if result.returncode != 0:
        raise PostgresError(f"set-up SQL failed on {server.socket_dir} (port {server.port}): {result.stderr.strip()}")
    return str(result.stdout)


def _role_sql(password: str) -> str:
    verifier = scram_verifier(password)
    return (
        f"select 'create role {AIRFLOW_ROLE} login' where not exists "
        f"(select from pg_roles where rolname = '{AIRFLOW_ROLE}')\\gexec\n"
        # The verifier, not the password: neither the log nor pg_stat_activity ever holds the password.
        f"alter role {AIRFLOW_ROLE} with login nosuperuser nocreatedb nocreaterole password '{verifier}';\n"
    )


def _database_sql(database: str, fresh: bool) -> str:
    _check_name(database)
    drop = f'drop database if exists "{database}" with (force);\n' if fresh else ""
    return drop + (
        f"select 'create database \"{database}\" owner {AIRFLOW_ROLE} encoding ''UTF8''' where not exists "
        f"(select from pg_database where datname = '{database}')\\gexec\n"
        f'revoke all on database "{database}" from public;\n'
    )


@contextmanager
def _start_lock(server: LocalPostgres) -> Iterator[None]:
    """One start at a time per cluster (make and a test session, or two test workers, may race for it)."""
    server.root.mkdir(parents=True, exist_ok=True)
    with open(server.root / ".start.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def start(env: Mapping[str, str] | None = None, timeout: float = 60.0,
          databases: tuple[str, ...] = ()) -> LocalPostgres:
    """Start the server unless it is already ready, then (re)apply the ``airflow`` role and ``databases``."""
    return start_server(local_postgres(env), timeout, databases)


def start_server(server: LocalPostgres, timeout: float = 60.0, databases: tuple[str, ...] = ()) -> LocalPostgres:
    """``start`` for a server described directly (the tests' own)."""
    with _start_lock(server):
        password = _ensure_password(server)
        deadline = time.monotonic() + timeout
        if not _await_predecessor(server, deadline, timeout):
            # A dead (or zombie) postmaster's pid file and socket lock: PostgreSQL itself would take a zombie (it
            # answers signal 0) for a live server. Its shared memory is free by now, so nothing else guards them.
            pidfile.discard_stale(server.pid_file, server.identity)
            socket_lock = server.socket_dir / f".s.PGSQL.{server.port}.lock"
            if pidfile.live_pid(socket_lock) is None:
                socket_lock.unlink(missing_ok=True)
            account = _server_account()
            _prepare_folders(server, account)
            _initialise(server, account)
            log_size = server.log_file.stat().st_size if server.log_file.exists() else 0
            run_as = _RunAs.of(account)
            with open(server.log_file, "ab") as out:
                proc = subprocess.Popen(
                    _server_args(server), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=server.datadir, env=_server_env(account),
                    start_new_session=True,  # outlives the make/pytest process that started it
                    user=run_as.user, group=run_as.group, extra_groups=run_as.extra_groups,
                )
            while not _ready(server):
                problem = None
                if proc.poll() is not None:
                    problem = f"postgres exited with code {proc.returncode}"
                elif time.monotonic() > deadline:
                    problem = f"PostgreSQL on {server.host}:{server.port} was not ready within {timeout:.0f}s"
                if problem:
                    tail = server.log_file.read_bytes()[log_size:].decode(errors="replace")[-1500:]
                    raise PostgresError(f"{problem}; log {server.log_file}:\n{tail}")
                time.sleep(0.1)
        _psql(server, _role_sql(password) + "".join(_database_sql(db, fresh=False) for db in databases))
    return server


def ensure_database(server: LocalPostgres, database: str, fresh: bool = False) -> None:
    """Create ``database`` owned by the ``airflow`` role unless it exists; ``fresh`` drops it first (a test's
    clean slate: every connection to it is closed)."""
    _psql(server, _database_sql(database, fresh))


def stop(env: Mapping[str, str] | None = None, timeout: float = 60.0) -> bool:
    """Shut the server down by its pid ("fast": open sessions are closed, the cluster is left consistent);
    returns False when it was not running. A pid file naming any other process is removed, that process left
    alone."""
    return stop_server(local_postgres(env), timeout)


def stop_server(server: LocalPostgres, timeout: float = 60.0) -> bool:
    """``stop`` for a server described directly (the tests' own)."""
    pid = running_pid(server)
    if pid is None:
        pidfile.discard_stale(server.pid_file, server.identity)
        return False
    os.kill(pid, signal.SIGINT)  # SIGTERM would wait for every client (Airflow's pools) to disconnect
    deadline = time.monotonic() + timeout
    while running_pid(server) is not None:
        if time.monotonic() > deadline:
            raise PostgresError(f"PostgreSQL pid {pid} did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    return True


def status(env: Mapping[str, str] | None = None) -> str:
    server = local_postgres(env)
    pid = running_pid(server)
    if pid is None:
        return f"stopped (data {server.datadir})"
    state = "ready" if _ready(server) else "NOT ready"
    return f"running pid {pid} on {server.host}:{server.port}, {state} (data {server.datadir})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m candlecast.postgres", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "url"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.command == "start":
            server = start()
            print(f"PostgreSQL {status()}; the airflow role's password in {server.passfile}")
        elif args.command == "stop":
            print("PostgreSQL stopped" if stop() else "PostgreSQL was not running")
        elif args.command == "status":
            print(f"PostgreSQL {status()}")
            return 0 if running_pid(local_postgres()) else 1
        else:
            print(local_postgres().url(LocalServices.from_env().airflow_db))
    except PostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
