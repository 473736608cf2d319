"""The project's own PostgreSQL (Airflow's metadata database): idempotent start, a private password that no URL,
command line or log holds, 127.0.0.1 only, and a start right after a SIGKILL that just works."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlecast import postgres
from candlecast.pidfile import process_state
from tests.conftest import TEST_LOCAL_DIR
from tests.support import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_env() -> Iterator[dict[str, str]]:
    """A private server's settings (its own folder, which the ``postgres`` OS user can reach, and a free port)."""
    import shutil

    parent = TEST_LOCAL_DIR / "private"
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="postgres-", dir=parent))
    path.chmod(0o755)
    env = {"CANDLECAST_LOCAL_DIR": str(path), "CANDLECAST_PG_PORT": str(free_port())}
    yield env
    postgres.stop(env)
    shutil.rmtree(path, ignore_errors=True)


def _connect(server: postgres.LocalPostgres, login: str = ""):
    """A libpq connection as Airflow's role over TCP; ``login`` overrides (``password=... passfile=...``)."""
    import psycopg

    return psycopg.connect(f"host={server.host} port={server.port} dbname=airflow user={postgres.AIRFLOW_ROLE} "
                           f"passfile={server.passfile} connect_timeout=10 {login}")


def _password(server: postgres.LocalPostgres) -> str:
    return server.passfile.read_text().strip().rsplit(":", 1)[1]


def test_a_second_start_reuses_the_server_and_airflow_logs_in_with_the_password_file_only(pg_env) -> None:
    import psutil
    import psycopg
    from sqlalchemy import create_engine, text

    server = postgres.start(pg_env, databases=("airflow",))
    pid = postgres.running_pid(server)
    assert pid is not None
    assert postgres.start(pg_env, databases=("airflow",)) == server
    assert postgres.running_pid(server) == pid  # the same process: nothing restarted
    assert "ready" in postgres.status(pg_env)

    assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
    password = _password(server)
    url = server.url("airflow")
    assert password not in url  # what Airflow's sql_alchemy_conn holds: no secret, libpq reads the file
    engine = create_engine(url)
    with engine.connect() as conn:
        user, superuser, listen = conn.execute(text(
            "select current_user, (select rolsuper from pg_roles where rolname = current_user), "
            "current_setting('listen_addresses')")).one()
    engine.dispose()
    assert (user, superuser, listen) == ("airflow", False, "127.0.0.1")

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(server, "password=not-the-password passfile=/dev/null").close()

    # the password is in the 0600 file only: not in the server's log, not on any command line
    assert password not in server.log_file.read_text(errors="replace")
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if password in " ".join(p.info["cmdline"] or [])]
    if os.geteuid() == 0:  # PostgreSQL refuses root: started by root, it runs as Debian's postgres user
        assert psutil.Process(pid).username() == postgres.SERVER_OS_USER


def test_start_right_after_a_sigkill_waits_for_the_dying_server_and_starts_a_fresh_one(pg_env) -> None:
    # Started by another process, as `make airflow` does, so the killed server is not this process's child.
    subprocess.run([sys.executable, "-m", "candlecast.postgres", "start"], env={**os.environ, **pg_env},
                   check=True, capture_output=True, timeout=120)
    server = postgres.local_postgres(pg_env)
    killed = postgres.running_pid(server)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    postgres.start(pg_env, databases=("airflow",))  # at once: its children still hold the shared memory
    fresh = postgres.running_pid(server)
    assert fresh is not None and fresh != killed
    assert process_state(killed) in (None, "Z")
    with _connect(server) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert time.monotonic() - started < 30
    assert postgres.stop(pg_env) is True
    assert postgres.stop(pg_env) is False
    assert postgres.status(pg_env).startswith("stopped")
