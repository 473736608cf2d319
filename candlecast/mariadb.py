"""The project's own MariaDB: Debian's ``mariadbd`` run as a plain background process.

Data lives under ``$CANDLECAST_LOCAL_DIR/mariadb`` (default ``.local/mariadb``), the server listens on
127.0.0.1 only, on ``CANDLECAST_DB_PORT`` (default 3407, so a system server on 3306 does not clash),
and everything is utf8mb4 and UTC. ``start`` is idempotent: it initialises the data directory once,
generates the role passwords once (into a 0600 credentials file), and re-applies databases, users
and grants every time, so a second start changes nothing.

Started by root, the server runs as Debian's unprivileged ``mysql`` user: it owns the data, its run folder
(socket, pid file, log), its temp and file-exchange folders, nothing else; the credentials file and the TLS
CA key stay root's. Server-side file access is confined to ``files/`` (``secure_file_priv``), no project role
holds FILE, SUPER or GRANT, and ``local_infile`` is off. Set-up (databases, users, grants) is done by the OS
user over the unix socket, not by a project role.

Remote SQL consumers are opt-in: ``CANDLECAST_DB_TLS=1`` generates a CA and a server certificate under
``tls/`` and makes the reader role REQUIRE SSL; ``CANDLECAST_DB_BIND_ADDRESS`` (default 127.0.0.1) binds
another address, and refuses to do so without TLS, except in the compose file's MariaDB container
(``CANDLECAST_DB_PRIVATE_NETWORK=1``: its address is on the compose network only, its port not published).
There ``run`` keeps the server in the foreground as the container's process, its logins seeded from the
container's secrets (``seed_credentials``).

Layout under ``.local/mariadb``: ``credentials.env`` (0600), ``data/``, ``run/`` (``mariadbd.sock``,
``mariadbd.pid``, ``mariadbd.log``), ``tmp/``, ``files/``, ``tls/`` (with TLS only).

    python -m candlecast.mariadb start|stop|status|env
    python -m candlecast.mariadb run                 # start, then stay until SIGTERM and stop (a container)
    python -m candlecast.mariadb option-file ROLE   # a 0600 [client] file for mariadb --defaults-extra-file
"""

from __future__ import annotations

import argparse
import getpass
import grp
import hashlib
import ipaddress
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from candlecast import pidfile
from candlecast.settings import (
    ROLES,
    DbServer,
    LocalServices,
    Schemas,
    credentials_file,
    db_settings,
    read_env_file,
)
from candlecast.settings.db import DEFAULT_DB_HOST
from candlecast.settings.local import DEFAULT_DB_BIND_ADDRESS
from candlecast.sql import quote_ident

log = logging.getLogger(__name__)

# Debian's mariadb-server creates this system user; root never runs the server itself.
SERVER_OS_USER = "mysql"
# The admin role is for set-up and test fixtures on this machine: it never accepts a remote connection.
ADMIN_HOSTS = ("localhost", "127.0.0.1")


class MariaDBError(RuntimeError):
    """The local server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class LocalServer:
    root: Path  # .local/mariadb
    port: int
    schemas: Schemas
    bind_address: str = DEFAULT_DB_BIND_ADDRESS
    tls: bool = False
    private_network: bool = False

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        """Socket, pid file and log: written by the server, so its own user's folder.

        A server started before this folder existed keeps its pid file and socket in ``root`` until it stops;
        it is found (and stopped) there.
        """
        legacy = self.root / "mariadbd.pid"
        if legacy.exists() and pidfile.our_pid(legacy, self.identity) is not None:
            return self.root
        return self.root / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "mariadbd.pid"

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    @property
    def files_dir(self) -> Path:
        """``secure_file_priv``: the only folder the server reads or writes files in for SQL."""
        return self.root / "files"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA certificate a TLS client verifies the server with (``CANDLECAST_DB_TLS=1``)."""
        return self.tls_dir / "ca.pem"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "mariadbd.log"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.env"

    @property
    def socket(self) -> Path:
        path = self.run_dir / "mariadbd.sock"
        # A unix socket path must fit in 108 bytes; deep CI checkouts can exceed that.
        if len(str(path)) < 100:
            return path
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"candlecast-{digest}.sock"

    @property
    def identity(self) -> pidfile.Identity:
        """What this datadir's server process looks like (checked before any signal)."""
        return pidfile.Identity(os.path.realpath(_binary("mariadbd")), (f"--datadir={self.datadir}",))


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def local_server(env: Mapping[str, str] | None = None) -> LocalServer:
    db = DbServer.from_env(env)
    local = LocalServices.from_env(env)
    server = LocalServer(root=local.mariadb_dir, port=db.port, schemas=db.schemas,
                         bind_address=local.db_bind_address, tls=local.db_tls,
                         private_network=local.db_private_network)
    if not _is_loopback(server.bind_address) and not server.tls and not server.private_network:
        raise MariaDBError(
            f"CANDLECAST_DB_BIND_ADDRESS={server.bind_address} accepts remote connections: set CANDLECAST_DB_TLS=1 "
            "too (the reader role then requires TLS), or bind 127.0.0.1"
        )
    return server


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise MariaDBError(f"{name} not found: install Debian's mariadb-server (`make deps` does)")


def running_pid(server: LocalServer) -> int | None:
    """The pid of this datadir's mariadbd while that process exists (answering or not); None once it is gone.

    A zombie (killed, not yet reaped) or a pid now naming another program is gone. A live pid may still be
    starting, or still dying: only ``_answers`` says it serves.
    """
    return pidfile.our_pid(server.pid_file, server.identity)


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


def _server_account() -> pwd.struct_passwd | None:
    """The OS user the server runs as when started by root; None when started by anyone else (runs as them)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise MariaDBError(
            f"started as root, MariaDB runs as the unprivileged user {SERVER_OS_USER!r}, which does not exist: "
            "install Debian's mariadb-server (it creates the user), or start as a non-root user"
        ) from None


def _blocking_dir(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first folder from / down to ``path`` that ``account`` cannot enter (None when it reaches it)."""
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    for folder in [*reversed(path.parents), path]:
        st = folder.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def _chown_tree(path: Path, account: pwd.struct_passwd) -> None:
    """Hand ``path`` (and everything below) to ``account``; a no-op when it already owns it."""
    if path.stat().st_uid == account.pw_uid:
        return
    os.chown(path, account.pw_uid, account.pw_gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(parent, name), account.pw_uid, account.pw_gid)


def _prepare_folders(server: LocalServer, account: pwd.struct_passwd | None) -> None:
    """The server's own folders, owned by the server's user; ``root`` (credentials, CA key) stays ours."""
    server.root.mkdir(parents=True, exist_ok=True)
    for folder in (server.run_dir, server.tmpdir, server.files_dir):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o755 if folder == server.run_dir else 0o700)  # the socket is reached by clients
    if account is None:
        return
    # The folders we made for it (.local, .local/mariadb) must let it through; a umask of 077 would not.
    for folder in (server.root.parent, server.root):
        st = folder.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IXOTH:
            os.chmod(folder, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
    blocked = _blocking_dir(server.root, account)
    if blocked is not None:
        raise MariaDBError(
            f"MariaDB runs as the unprivileged user {account.pw_name!r}, which cannot enter {blocked} "
            f"(mode {stat.S_IMODE(blocked.stat().st_mode):o}) on the way to {server.root}: let it through "
            f"(chmod o+x {blocked}) or put the data elsewhere (CANDLECAST_LOCAL_DIR=/path/it/can/reach)"
        )
    for folder in (server.run_dir, server.tmpdir, server.files_dir):
        _chown_tree(folder, account)
    if server.datadir.exists():  # a datadir made by an older start that ran the server as root
        _chown_tree(server.datadir, account)


def _server_args(server: LocalServer, account: pwd.struct_passwd | None) -> list[str]:
    args = [
        _binary("mariadbd"),
        "--no-defaults",
        f"--datadir={server.datadir}",
        f"--socket={server.socket}",
        f"--port={server.port}",
        f"--bind-address={server.bind_address}",
        f"--pid-file={server.pid_file}",
        f"--log-error={server.log_file}",
        # Its own temp dir: on-disk temp tables in a shared /tmp were seen vanishing mid-build.
        f"--tmpdir={server.tmpdir}",
        # Server-side files (INTO OUTFILE, LOAD_FILE, LOAD DATA INFILE) only here, and no role holds FILE.
        f"--secure-file-priv={server.files_dir}",
        # Clients cannot make the server read their files either; a benchmark turns it on for its own run.
        "--local-infile=0",
        # --no-defaults starts in latin1; the project is utf8mb4 end to end.
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        "--default-time-zone=+00:00",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=256M",
        "--innodb-log-file-size=128M",
        "--max-connections=200",
    ]
    if server.tls:
        args += [f"--ssl-ca={server.ca_file}", f"--ssl-cert={server.tls_dir / 'server.pem'}",
                 f"--ssl-key={server.tls_dir / 'server.key'}"]
    if account is not None:
        args.append(f"--user={account.pw_name}")
    return args


def _initialise(server: LocalServer, account: pwd.struct_passwd | None) -> None:
    if (server.datadir / "mysql").is_dir():
        return
    server.datadir.mkdir(parents=True, exist_ok=True)
    cmd = [
        _binary("mariadb-install-db"),
        "--no-defaults",
        f"--datadir={server.datadir}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
        # Passed through to the bootstrap mariadbd: its temp tables in a shared /tmp were seen vanishing
        # ("Could not remove temporary table '/tmp/#sql-temptable-...'"), failing the whole install.
        f"--tmpdir={server.tmpdir}",
    ]
    if account is not None:
        _chown_tree(server.datadir, account)
        cmd.append(f"--user={account.pw_name}")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(server.datadir, ignore_errors=True)
        raise MariaDBError(f"mariadb-install-db failed in {server.datadir}: {result.stderr.strip()[-2000:]}")


def _ensure_tls(server: LocalServer, account: pwd.struct_passwd | None) -> None:
    """A CA and a server certificate for 127.0.0.1, localhost and the bound address, made once.

    The CA key stays with the user who starts the server (0600); the server key is the server's (0600).
    """
    server_key = server.tls_dir / "server.key"
    if server.ca_file.exists() and server_key.exists() and (server.tls_dir / "server.pem").exists():
        return
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)  # certificate validity is about the real clock, not a data time

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "candlecast local"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("candlecast local CA")).issuer_name(name("candlecast local CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        bound = ipaddress.ip_address(server.bind_address)
        if not bound.is_unspecified and not bound.is_loopback:
            names.append(x509.IPAddress(bound))
    except ValueError:
        names.append(x509.DNSName(server.bind_address))
    names += [x509.DNSName(socket.gethostname())]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name(socket.gethostname())).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server.tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(server.tls_dir, 0o755)

    def write(path: Path, data: bytes, mode: int) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    private = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    write(server.tls_dir / "ca.key", ca_key.private_bytes(serialization.Encoding.PEM, private, plain), 0o600)
    write(server_key, key.private_bytes(serialization.Encoding.PEM, private, plain), 0o600)
    if account is not None:
        os.chown(server_key, account.pw_uid, account.pw_gid)
    write(server.tls_dir / "server.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write(server.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)


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
        _write_credentials(server, values)
    os.chmod(server.credentials, 0o600)
    return values


def _write_credentials(server: LocalServer, values: Mapping[str, str]) -> None:
    server.root.mkdir(parents=True, exist_ok=True)
    tmp = server.credentials.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Generated by candlecast.mariadb on first start. Never commit. Env vars override.\n")
        fh.writelines(f"{key}={value}\n" for key, value in sorted(values.items()))
    os.replace(tmp, server.credentials)


def seed_credentials(server: LocalServer, passwords: Mapping[str, str]) -> None:
    """Make ``passwords`` (``CANDLECAST_<ROLE>_PASSWORD`` values) the ones the next start applies.

    For a server whose logins are given to it (a container's secrets) rather than generated: start writes the
    credentials file's values into the server, so the given ones replace what the file held (a rotation).
    """
    unknown = set(passwords) - {f"CANDLECAST_{role.upper()}_PASSWORD" for role in ROLES}
    if unknown:
        raise MariaDBError(f"not a role's password variable: {', '.join(sorted(unknown))}")
    values = {**read_env_file(server.credentials), **passwords}
    _write_credentials(server, values)


def _quote_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _grant_target(database: str) -> str:
    """``db``.* for a GRANT: ``_`` and ``%`` are wildcards there, so ``a_raw`` would also grant ``aXraw``."""
    return quote_ident(database.replace("_", "\\_").replace("%", "\\%")) + ".*"


# What each role may do on each of a base's databases (the README's Security section shows this table and
# tests/foundation/test_privileges.py checks the server against it). Nothing is granted on *.*.
WRITE = "select, insert, update, delete, create, drop, index, alter"
DBT_RIGHTS = WRITE + ", create view, show view, create temporary tables, lock tables, references"


def role_grants(schemas: Schemas) -> dict[str, list[tuple[str, str]]]:
    """(privileges, database) per role for one base."""
    return {
        "admin": [("all privileges", db) for db in schemas.all()],
        "loader": [(WRITE, schemas.raw)],
        "transformer": [("select", schemas.raw), ("select", schemas.ml),
                        *((DBT_RIGHTS, db) for db in (schemas.base, schemas.staging, schemas.intermediate,
                                                      schemas.marts))],
        "ml": [("select", schemas.marts), (WRITE, schemas.ml)],
        "reader": [("select, show view", schemas.marts)],
    }


def bootstrap_sql(schemas: Schemas, creds: Mapping[str, str], reader_requires_tls: bool = False) -> str:
    """Databases, users and least-privilege grants; every statement is safe to re-run."""

    def accounts(role: str) -> list[str]:
        name = _quote_str(creds[f"CANDLECAST_{role.upper()}_USER"])
        hosts = ADMIN_HOSTS if role == "admin" else ("%",)
        return [f"{name}@{_quote_str(host)}" for host in hosts]

    lines = [f"create database if not exists {quote_ident(db)} character set utf8mb4 collate utf8mb4_unicode_ci;"
             for db in schemas.all()]
    admin_name = _quote_str(creds["CANDLECAST_ADMIN_USER"])
    # Older starts made the admin reachable from anywhere with every privilege and GRANT: that account goes.
    lines.append(f"drop user if exists {admin_name}@'%';")
    for role in ROLES:
        password = _quote_str(creds[f"CANDLECAST_{role.upper()}_PASSWORD"])
        for account in accounts(role):
            lines.append(f"create user if not exists {account} identified by {password};")
            lines.append(f"alter user {account} identified by {password};")
    for account in accounts("reader"):
        lines.append(f"alter user {account} require {'ssl' if reader_requires_tls else 'none'};")
    for account in accounts("admin"):
        # To see what other sessions run (a test arms a kill on a loader's query it watches).
        lines.append(f"grant process on *.* to {account};")
    users = ", ".join(_quote_str(creds[f"CANDLECAST_{role.upper()}_USER"]) for role in ROLES)
    wild = ", ".join(_quote_str(db) for db in schemas.all() if "_" in db or "%" in db)
    # Older starts granted on the unescaped names (wildcards): those grants go before the exact ones are made.
    lines += [f"delete from mysql.db where User in ({users}) and Db in ({wild});", "flush privileges;"] if wild else []
    for grantee, grants in role_grants(schemas).items():
        for privileges, database in grants:
            for account in accounts(grantee):
                lines.append(f"grant {privileges} on {_grant_target(database)} to {account};")
    lines.append("flush privileges;")
    return "\n".join(lines) + "\n"


def superuser_sql(server: LocalServer, sql: str) -> str:
    """Run ``sql`` as the OS user's unix_socket account (the set-up path); returns the batch output."""
    # Whoever initialised the datadir (root, or the developer) owns an account of their name there.
    user = "root" if os.geteuid() == 0 else getpass.getuser()
    cmd = [_binary("mariadb"), "--no-defaults", f"--socket={server.socket}", "-u", user, "--batch",
           "--skip-column-names"]
    result = subprocess.run(cmd, input=sql, capture_output=True, text=True)
    if result.returncode != 0:
        raise MariaDBError(f"set-up SQL failed on {server.socket}: {result.stderr.strip()}")
    return result.stdout


def start(env: Mapping[str, str] | None = None, timeout: float = 60.0) -> LocalServer:
    """Start the server unless it already answers; ``timeout`` covers waiting for a dying one and the start."""
    server = local_server(env)
    creds = _ensure_credentials(server)
    deadline = time.monotonic() + timeout
    answering, waited = _await_predecessor(server, deadline, timeout)
    if not answering:
        pidfile.discard_stale(server.pid_file, server.identity)
        account = _server_account()
        _prepare_folders(server, account)
        _initialise(server, account)
        os.chmod(server.datadir, 0o700)  # table files are nobody else's business
        if server.tls:
            _ensure_tls(server, account)
        server.socket.unlink(missing_ok=True)
        log_size = server.log_file.stat().st_size if server.log_file.exists() else 0
        args = _server_args(server, account)
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
                problem = f"MariaDB on {server.bind_address}:{server.port} did not answer within {timeout:.0f}s"
            if problem:
                tail = server.log_file.read_bytes()[log_size:].decode(errors="replace")[-1500:] \
                    if server.log_file.exists() else ""
                raise MariaDBError(f"{problem}; log {server.log_file}:\n{tail}")
            time.sleep(0.2)
    superuser_sql(server, bootstrap_sql(server.schemas, creds, reader_requires_tls=server.tls))
    return server


def provision(schemas: Schemas, env: Mapping[str, str] | None = None, fresh: bool = False) -> None:
    """Create another set of databases (another ``CANDLECAST_DB_SCHEMA`` base) with the same grants.

    The tests give each area its own base so that one area's fixtures never clobber another's tables;
    ``fresh`` drops the base's databases first (set-up's job: the admin role cannot drop what it was never
    granted).
    """
    server = local_server(env)
    drops = "".join(f"drop database if exists {quote_ident(db)};\n" for db in schemas.all()) if fresh else ""
    superuser_sql(server, drops + bootstrap_sql(schemas, _ensure_credentials(server), reader_requires_tls=server.tls))


@contextmanager
def local_infile_enabled(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """``local_infile`` on for the block only (the benchmark that compares with LOAD DATA LOCAL), then off."""
    server = local_server(env)
    superuser_sql(server, "set global local_infile = 1;")
    try:
        yield
    finally:
        superuser_sql(server, "set global local_infile = 0;")


def option_file(role: str, env: Mapping[str, str] | None = None) -> Path:
    """A 0600 ``[client]`` option file with one role's login, for ``mariadb --defaults-extra-file=...``.

    So the password is never typed on a command line (where ``ps`` shows it to every user) nor asked for.
    """
    if role not in ROLES:
        raise MariaDBError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    server = local_server(env)
    _ensure_credentials(server)
    login = db_settings(role, env)  # env vars win over the generated file
    lines = ["[client]", f"user={login.user}", f"password={login.password}", f"host={login.host}",
             f"port={login.port}"]
    if server.tls:
        lines += [f"ssl-ca={server.ca_file}", "ssl-verify-server-cert"]
    path = server.root / f"{role}.cnf"
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Generated by candlecast.mariadb option-file; never commit.\n" + "\n".join(lines) + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    return path


def stop(env: Mapping[str, str] | None = None, timeout: float = 60.0) -> bool:
    """Shut the server down cleanly by its pid; returns False when it was not running.

    A pid file naming any other process (a recycled pid) is removed, and that process left alone.
    """
    server = local_server(env)
    pid = running_pid(server)
    if pid is None:
        pidfile.discard_stale(server.pid_file, server.identity)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(server) is not None:
        if time.monotonic() > deadline:
            raise MariaDBError(f"MariaDB pid {pid} did not stop within {timeout:.0f}s")
        time.sleep(0.2)
    return True


def run(env: Mapping[str, str] | None = None, poll_s: float = 1.0) -> int:
    """Start the server, then stay while it runs (a container's main process); SIGTERM or SIGINT stops it.

    Returns 0 after a requested stop, 1 when the server went away by itself (the container then exits, and
    its restart policy starts a new one, which heals like any start after a crash).
    """
    server = start(env)
    requested: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("MariaDB %s", status(env))
    while not requested and running_pid(server) is not None:
        time.sleep(poll_s)
    if requested:
        stop(env)
        return 0
    log.error("mariadbd exited on its own; log %s", server.log_file)
    return 1


def status(env: Mapping[str, str] | None = None) -> str:
    server = local_server(env)
    pid = running_pid(server)
    if pid is None:
        stale = pidfile.discard_stale(server.pid_file, server.identity)
        return f"stopped (data {server.datadir})" + (f"; {stale}" if stale else "")
    state = "answering" if _answers(server) else "NOT answering"
    return f"running pid {pid} on {server.bind_address}:{server.port}, {state} (data {server.datadir})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m candlecast.mariadb", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "run", "stop", "status", "env", "option-file"])
    parser.add_argument("role", nargs="?", help="option-file: the role whose login it holds (e.g. reader)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.command == "option-file":
            if not args.role:
                parser.error("option-file needs a role, e.g. `option-file reader`")
            print(option_file(args.role))
        elif args.command == "start":
            server = start()
            print(f"MariaDB {status()}; credentials in {server.credentials}")
        elif args.command == "run":
            logging.getLogger().setLevel(logging.INFO)  # a container's log: say it is up
            return run()
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
