"""The project's own MariaDB: Debian's ``mariadbd`` run as a plain background process.

Data lives under ``$CANDLECAST_LOCAL_DIR/mariadb`` (default ``.local/mariadb``), the server listens on
127.0.0.1 only, on ``CANDLECAST_DB_PORT`` (default 3407, so a system server on 3306 does not clash),
and everything is utf8mb4 and UTC. ``start`` is idempotent: it initialises the data directory once,
generates the role passwords once (into a 0600 credentials file), and re-applies databases, users
and grants every time, so a second start changes nothing.

    python -m candlecast.mariadb start|stop|status|env
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from candlecast.pidfile import live_pid
from candlecast.settings import ROLES, DbServer, LocalServices, Schemas, credentials_file, read_env_file
from candlecast.settings.db import DEFAULT_DB_HOST
from candlecast.sql import quote_ident

log = logging.getLogger(__name__)


class MariaDBError(RuntimeError):
    """The local server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class LocalServer:
    root: Path  # .local/mariadb
    port: int
    schemas: Schemas

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        return self.root / "mariadbd.pid"

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    @property
    def log_file(self) -> Path:
        return self.root / "mariadbd.log"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.env"

    @property
    def socket(self) -> Path:
        path = self.root / "mariadbd.sock"
        # A unix socket path must fit in 108 bytes; deep CI checkouts can exceed that.
        if len(str(path)) < 100:
            return path
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"candlecast-{digest}.sock"


def local_server(env: Mapping[str, str] | None = None) -> LocalServer:
    db = DbServer.from_env(env)
    return LocalServer(root=LocalServices.from_env(env).mariadb_dir, port=db.port, schemas=db.schemas)


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise MariaDBError(f"{name} not found: install Debian's mariadb-server (`make deps` does)")


def _is_this_server(server: LocalServer, pid: int) -> bool:
    """False only when ``pid`` is clearly another program (a recycled pid): its command line lacks our datadir.

    An exiting process has an empty command line while it still holds its files, so "unknown" counts as ours.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return not cmdline or f"--datadir={server.datadir}".encode() in cmdline


def running_pid(server: LocalServer) -> int | None:
    """The pid of this datadir's mariadbd while that process exists (answering or not); None once it is gone.

    A zombie (killed, not yet reaped) or a recycled pid is gone. A live pid may still be starting, or still
    dying: only ``_answers`` says it serves.
    """
    pid = live_pid(server.pid_file)
    if pid is None or not _is_this_server(server, pid):
        return None
    return pid


def _answers(server: LocalServer) -> bool:
    """The server on our own unix socket speaks (a port could be answered by some other server)."""
    if not server.socket.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1)
            conn.connect(str(server.socket))
            # A MariaDB server speaks first: a handshake (0x0a), or an error packet (0xff, e.g. too many
            # connections); either way it is up and answering.
            greeting = b""
            while len(greeting) < 5:
                chunk = conn.recv(5 - len(greeting))
                if not chunk:
                    return False
                greeting += chunk
            return greeting[4] in (0x0A, 0xFF)
    except OSError:
        return False


def _await_predecessor(server: LocalServer, deadline: float, timeout: float) -> tuple[bool, bool]:
    """Wait until the pid-file's server answers or is gone; returns (answering, a predecessor was waited for).

    A pid that does not answer is never taken for a running server: right after a SIGKILL, mariadbd takes a
    second or more to disappear (io_uring teardown) while still answering signal 0; during crash recovery a
    live one takes a while to answer. Either settles within the timeout, or this says which pid is stuck.
    """
    waited = False
    while (pid := running_pid(server)) is not None:
        if _answers(server):
            return True, waited
        if time.monotonic() > deadline:
            raise MariaDBError(
                f"mariadbd pid {pid} (pid file {server.pid_file}) neither answers on {server.socket} nor exits "
                f"within {timeout:.0f}s; if it is hung, kill it (kill -9 {pid}) and start again"
            )
        waited = True
        time.sleep(0.1)
    return False, waited


def _server_args(server: LocalServer) -> list[str]:
    args = [
        _binary("mariadbd"),
        "--no-defaults",
        f"--datadir={server.datadir}",
        f"--socket={server.socket}",
        f"--port={server.port}",
        "--bind-address=127.0.0.1",
        f"--pid-file={server.pid_file}",
        f"--log-error={server.log_file}",
        # Its own temp dir: on-disk temp tables in a shared /tmp were seen vanishing mid-build.
        f"--tmpdir={server.tmpdir}",
        # --no-defaults starts in latin1; the project is utf8mb4 end to end.
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        "--default-time-zone=+00:00",
        "--skip-name-resolve",
        "--local-infile=1",
        "--innodb-buffer-pool-size=256M",
        "--innodb-log-file-size=128M",
        "--max-connections=200",
    ]
    if os.geteuid() == 0:
        args.append("--user=root")
    return args


def _initialise(server: LocalServer) -> None:
    if (server.datadir / "mysql").is_dir():
        return
    server.datadir.mkdir(parents=True, exist_ok=True)
    cmd = [
        _binary("mariadb-install-db"),
        "--no-defaults",
        f"--datadir={server.datadir}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ]
    if os.geteuid() == 0:
        cmd.append("--user=root")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(server.datadir, ignore_errors=True)
        raise MariaDBError(f"mariadb-install-db failed in {server.datadir}: {result.stderr.strip()[-2000:]}")


def _ensure_credentials(server: LocalServer) -> dict[str, str]:
    existing = read_env_file(server.credentials)
    values = dict(existing)
    values.setdefault("CANDLECAST_DB_HOST", DEFAULT_DB_HOST)
    values["CANDLECAST_DB_PORT"] = str(server.port)
    values.setdefault("CANDLECAST_DB_SCHEMA", server.schemas.base)
    for role in ROLES:
        values.setdefault(f"CANDLECAST_{role.upper()}_USER", role)
        values.setdefault(f"CANDLECAST_{role.upper()}_PASSWORD", secrets.token_urlsafe(24))
    if values != existing:
        server.root.mkdir(parents=True, exist_ok=True)
        tmp = server.credentials.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("# Generated by candlecast.mariadb on first start. Never commit. Env vars override.\n")
            fh.writelines(f"{key}={value}\n" for key, value in sorted(values.items()))
        os.replace(tmp, server.credentials)
    os.chmod(server.credentials, 0o600)
    return values


def _quote_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def bootstrap_sql(schemas: Schemas, creds: Mapping[str, str]) -> str:
    """Databases, users and least-privilege grants; every statement is safe to re-run."""

    def user(role: str) -> str:
        return f"{_quote_str(creds[f'CANDLECAST_{role.upper()}_USER'])}@'%'"

    write = "select, insert, update, delete, create, drop, index, alter"
    dbt_rights = write + ", create view, show view, create temporary tables, lock tables, references"
    lines = [f"create database if not exists {quote_ident(db)} character set utf8mb4 collate utf8mb4_unicode_ci;"
             for db in schemas.all()]
    for role in ROLES:
        password = _quote_str(creds[f"CANDLECAST_{role.upper()}_PASSWORD"])
        lines.append(f"create user if not exists {user(role)} identified by {password};")
        lines.append(f"alter user {user(role)} identified by {password};")
    q = quote_ident
    lines += [
        f"grant all privileges on *.* to {user('admin')} with grant option;",
        f"grant {write} on {q(schemas.raw)}.* to {user('loader')};",
        f"grant select on {q(schemas.raw)}.* to {user('transformer')};",
        f"grant select on {q(schemas.ml)}.* to {user('transformer')};",
        *(f"grant {dbt_rights} on {q(db)}.* to {user('transformer')};"
          for db in (schemas.base, schemas.staging, schemas.intermediate, schemas.marts)),
        f"grant select on {q(schemas.marts)}.* to {user('ml')};",
        f"grant {write} on {q(schemas.ml)}.* to {user('ml')};",
        f"grant select, show view on {q(schemas.marts)}.* to {user('reader')};",
        "flush privileges;",
    ]
    return "\n".join(lines) + "\n"


def _run_sql_as_superuser(server: LocalServer, sql: str) -> None:
    # The OS user that initialised the datadir owns a unix_socket-authenticated account of its name.
    import getpass

    cmd = [_binary("mariadb"), "--no-defaults", f"--socket={server.socket}", "-u", getpass.getuser(), "--batch"]
    result = subprocess.run(cmd, input=sql, capture_output=True, text=True)
    if result.returncode != 0:
        raise MariaDBError(f"bootstrap SQL failed on {server.socket}: {result.stderr.strip()}")


def start(env: Mapping[str, str] | None = None, timeout: float = 60.0) -> LocalServer:
    """Start the server unless it already answers; ``timeout`` covers waiting for a dying one and the start."""
    server = local_server(env)
    creds = _ensure_credentials(server)
    deadline = time.monotonic() + timeout
    answering, waited = _await_predecessor(server, deadline, timeout)
    if not answering:
        _initialise(server)
        server.socket.unlink(missing_ok=True)
        server.tmpdir.mkdir(parents=True, exist_ok=True)
        log_size = server.log_file.stat().st_size if server.log_file.exists() else 0
        args = _server_args(server)
        if waited:  # the killed predecessor's port may be released a moment after the process is gone
            args.append(f"--port-open-timeout={max(1, min(10, int(deadline - time.monotonic())))}")
        with open(server.root / "mariadbd.stdout", "ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the make/pytest process that started it
            )
        # The socket is ours alone; the TCP port could be answered by some other server.
        while not _answers(server):
            problem = None
            if proc.poll() is not None:
                problem = f"mariadbd exited with code {proc.returncode}"
            elif time.monotonic() > deadline:
                problem = f"MariaDB on 127.0.0.1:{server.port} did not answer within {timeout:.0f}s"
            if problem:
                tail = server.log_file.read_bytes()[log_size:].decode(errors="replace")[-1500:] \
                    if server.log_file.exists() else ""
                raise MariaDBError(f"{problem}; log {server.log_file}:\n{tail}")
            time.sleep(0.2)
    _run_sql_as_superuser(server, bootstrap_sql(server.schemas, creds))
    return server


def provision(schemas: Schemas, env: Mapping[str, str] | None = None) -> None:
    """Create another set of databases (another ``CANDLECAST_DB_SCHEMA`` base) with the same grants.

    The tests give each area its own base so that one area's fixtures never clobber another's tables.
    """
    server = local_server(env)
    _run_sql_as_superuser(server, bootstrap_sql(schemas, _ensure_credentials(server)))


def stop(env: Mapping[str, str] | None = None, timeout: float = 60.0) -> bool:
    """Shut the server down cleanly by its pid; returns False when it was not running."""
    server = local_server(env)
    pid = running_pid(server)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(server) is not None:
        if time.monotonic() > deadline:
            raise MariaDBError(f"MariaDB pid {pid} did not stop within {timeout:.0f}s")
        time.sleep(0.2)
    return True


def status(env: Mapping[str, str] | None = None) -> str:
    server = local_server(env)
    pid = running_pid(server)
    if pid is None:
        return f"stopped (data {server.datadir})"
    state = "answering" if _answers(server) else "NOT answering"
    return f"running pid {pid} on 127.0.0.1:{server.port}, {state} (data {server.datadir})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m candlecast.mariadb", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            server = start()
            print(f"MariaDB {status()}; credentials in {server.credentials}")
        elif args.command == "stop":
            print("MariaDB stopped" if stop() else "MariaDB was not running")
        elif args.command == "status":
            print(f"MariaDB {status()}")
        else:
            print(credentials_file())
    except MariaDBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
