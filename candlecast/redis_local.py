"""The project's own Redis, Celery's broker (``make airflow EXECUTOR=celery``): Debian's ``redis-server`` run as a
plain background process, like ``candlecast.mariadb`` and ``candlecast.postgres``.

It lives under ``$CANDLECAST_LOCAL_DIR/redis`` (default ``.local/redis``), listens on 127.0.0.1 only, on
``CANDLECAST_REDIS_PORT`` (default 6407, so a system Redis on 6379 does not clash), and requires a password
generated on first start. ``start`` is idempotent: a running server that answers is left alone.

Started by root, the server runs as Debian's unprivileged ``redis`` user: it owns its config (which holds the
password, 0600), its data and run folders, nothing else. The password never appears on a command line, in a log or
in an environment: the server reads it from its config file, and Airflow reads the broker URL from a 0600 file of
ours (``broker_url``) through its ``_CMD`` option (``AIRFLOW__CELERY__BROKER_URL_CMD=cat .local/redis/broker_url``).

Layout under ``.local/redis``: ``redis.conf`` (0600, the server's), ``broker_url`` (0600), ``data/`` (its
snapshot), ``run/`` (``redis.pid``), ``redis.log``.

    python -m candlecast.redis_local start|stop|status
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from candlecast import pidfile
from candlecast.settings import LocalServices

log = logging.getLogger(__name__)

SERVER_OS_USER = "redis"  # Debian's redis-server package creates it; root never runs the server itself
HOST = "127.0.0.1"


class RedisError(RuntimeError):
    """The local Redis could not be started or stopped."""


@dataclass(frozen=True)
class LocalRedis:
    root: Path  # .local/redis
    port: int
    host: str = HOST

    @property
    def config(self) -> Path:
        return self.root / "redis.conf"

    @property
    def broker_url_file(self) -> Path:
        return self.root / "broker_url"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    @property
    def identity(self) -> pidfile.Identity:
        # `set-proc-title no` keeps the command line as started, so the config path identifies our server.
        return pidfile.Identity(os.path.realpath(binary()), (str(self.config),))

    def broker_url_command(self) -> str:
        """Airflow's ``[celery] broker_url_cmd``: prints the URL (with the password) from the 0600 file."""
        return f"cat {self.broker_url_file}"


def local_redis(env: Mapping[str, str] | None = None) -> LocalRedis:
    local = LocalServices.from_env(env)
    return LocalRedis(root=local.redis_dir.resolve(), port=local.redis_port)


def binary() -> str:
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RedisError("redis-server not found: install Debian's redis-server (`make deps` does)")


def _server_account() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise RedisError(f"started as root, Redis runs as the unprivileged user {SERVER_OS_USER!r}, which does not "
                         "exist: install Debian's redis-server (it creates the user), or start as a non-root user"
                         ) from None


def _write_private(path: Path, text: str, account: pwd.struct_passwd | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    if account is not None:
        os.chown(tmp, account.pw_uid, account.pw_gid)
    os.replace(tmp, path)


def _password(server: LocalRedis) -> str:
    """The password in the broker URL file, generated on first start (URL-safe: it sits in the URL as it is)."""
    try:
        url = server.broker_url_file.read_text(encoding="utf-8").strip()
        password = url.split("://:", 1)[1].split("@", 1)[0]
        if password:
            return password
    except (FileNotFoundError, IndexError):
        pass
    return secrets.token_urlsafe(32)


def server_config(server: LocalRedis, password: str) -> str:
    return "\n".join([
        f"bind {server.host}",
        f"port {server.port}",
        f"requirepass {password}",
        f"dir {server.data_dir}",
        f"pidfile {server.pid_file}",
        f"logfile {server.log_file}",
        "daemonize no",
        "set-proc-title no",
        "protected-mode yes",
        # A broker's queue is re-sent by the scheduler after a restart: a snapshot now and then is enough.
        "appendonly no",
        "save 300 1",
        "",
    ])


def _answers(server: LocalRedis) -> bool:
    """Something speaking Redis answers on the port (-NOAUTH to an unauthenticated PING is an answer)."""
    try:
        with socket.create_connection((server.host, server.port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            reply = conn.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR"))


def running_pid(server: LocalRedis) -> int | None:
    return pidfile.our_pid(server.pid_file, server.identity)


def start(env: Mapping[str, str] | None = None, timeout: float = 30.0) -> LocalRedis:
    """Start the server unless ours runs and answers; write the broker URL file. Idempotent."""
    return start_server(local_redis(env), timeout)


def start_server(server: LocalRedis, timeout: float = 30.0) -> LocalRedis:
    """``start`` for a server described directly (``make airflow``'s, the tests' own)."""
    server.root.mkdir(parents=True, exist_ok=True)
    password = _password(server)
    _write_private(server.broker_url_file, f"redis://:{password}@{server.host}:{server.port}/0\n")
    if running_pid(server) is not None and _answers(server):
        return server
    pidfile.discard_stale(server.pid_file, server.identity)
    account = _server_account()
    for folder in (server.data_dir, server.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        if account is not None:
            os.chown(folder, account.pw_uid, account.pw_gid)
    if account is not None:
        os.chmod(server.root, 0o755)  # the server's user goes through to its own folders, reads nothing of ours
        server.log_file.touch()
        os.chown(server.log_file, account.pw_uid, account.pw_gid)
    _write_private(server.config, server_config(server, password), account)
    log_size = server.log_file.stat().st_size if server.log_file.exists() else 0
    user = (account.pw_uid, account.pw_gid) if account is not None else (None, None)
    proc = subprocess.Popen(
        [binary(), str(server.config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, cwd=server.root, env={"PATH": os.defpath, "LC_ALL": "C"},
        start_new_session=True, user=user[0], group=user[1], extra_groups=[] if account is not None else None,
    )
    deadline = time.monotonic() + timeout
    while running_pid(server) is None or not _answers(server):
        problem = None
        if proc.poll() is not None:
            problem = f"redis-server exited with code {proc.returncode}"
        elif time.monotonic() > deadline:
            problem = f"Redis on {server.host}:{server.port} did not answer within {timeout:.0f}s"
        if problem:
            tail = server.log_file.read_bytes()[log_size:].decode(errors="replace")[-1500:] \
                if server.log_file.exists() else ""
            raise RedisError(f"{problem}; log {server.log_file}:\n{tail}")
        time.sleep(0.1)
    return server


def stop(env: Mapping[str, str] | None = None, timeout: float = 30.0) -> bool:
    """SIGTERM to our server (it saves a snapshot and exits); False when it was not running. A pid file naming
    any other process is removed, and that process left alone."""
    return stop_server(local_redis(env), timeout)


def stop_server(server: LocalRedis, timeout: float = 30.0) -> bool:
    """``stop`` for a server described directly."""
    pid = running_pid(server)
    if pid is None:
        pidfile.discard_stale(server.pid_file, server.identity)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(server) is not None:
        if time.monotonic() > deadline:
            raise RedisError(f"Redis pid {pid} did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    return True


def status(env: Mapping[str, str] | None = None) -> str:
    server = local_redis(env)
    pid = running_pid(server)
    if pid is None:
        return f"stopped (data {server.data_dir})"
    return f"running pid {pid} on {server.host}:{server.port}, {'answering' if _answers(server) else 'NOT answering'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m candlecast.redis_local", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.command == "start":
            server = start()
            print(f"Redis {status()}; broker URL in {server.broker_url_file}")
        elif args.command == "stop":
            print("Redis stopped" if stop() else "Redis was not running")
        else:
            print(f"Redis {status()}")
            return 0 if running_pid(local_redis()) else 1
    except RedisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
