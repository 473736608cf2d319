"""The project's own MariaDB: idempotent start, least-privilege roles, utf8mb4 and UTC."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError

from candlecast import mariadb as local
from candlecast.db import DatabaseUnavailable, check_connection, engine_for, make_engine
from candlecast.pidfile import live_pid, process_state
from candlecast.settings import DbSettings, Schemas
from tests.support import free_port

pytestmark = pytest.mark.integration


def test_second_start_changes_nothing_and_keeps_passwords(mariadb: dict[str, str]) -> None:
    server = local.start()
    assert local.running_pid(server) is not None
    assert server.credentials.read_text().count("PASSWORD=") == 5
    assert {k: v for k, v in mariadb.items()} == local.read_env_file(server.credentials)


def test_credentials_file_is_private(mariadb: dict[str, str]) -> None:
    mode = stat.S_IMODE(local.local_server().credentials.stat().st_mode)
    assert mode == 0o600


def test_server_is_utf8mb4_and_utc(admin_engine) -> None:
    with admin_engine.connect() as conn:
        charset, tz = conn.execute(text("select @@character_set_server, @@global.time_zone")).one()
    assert charset == "utf8mb4"
    assert tz == "+00:00"


def test_reader_cannot_write_or_see_raw(mariadb: dict[str, str]) -> None:
    schemas = Schemas()
    engine = engine_for("reader")
    with engine.connect() as conn:
        with pytest.raises((OperationalError, ProgrammingError)):
            conn.execute(text(f"create table {schemas.marts}.reader_was_here (x int)"))
        with pytest.raises((OperationalError, ProgrammingError)):
            conn.execute(text(f"select 1 from {schemas.raw}.candles limit 1"))
    engine.dispose()


def test_unreachable_database_names_the_server() -> None:
    settings = DbSettings(host="127.0.0.1", port=1, user="loader", password="x", schemas=Schemas(), connect_timeout=2)
    with pytest.raises(DatabaseUnavailable, match=r"loader@127\.0\.0\.1:1"):
        check_connection(make_engine(settings), "extract")


def test_private_server_starts_stops_cleanly_and_refuses_a_taken_port(
    server_dir: Path, mariadb: dict[str, str]
) -> None:
    env = {"CANDLECAST_LOCAL_DIR": str(server_dir / "own"), "CANDLECAST_DB_PORT": str(free_port())}
    server = local.start(env=env)
    try:
        assert "running" in local.status(env=env)
        engine = engine_for("loader", env=env)
        check_connection(engine, "private server")
        engine.dispose()
    finally:
        assert local.stop(env=env) is True
    assert local.status(env=env).startswith("stopped")
    assert local.running_pid(server) is None

    # Same port as the shared test server: the error must say so instead of hanging or lying.
    clash = {"CANDLECAST_LOCAL_DIR": str(server_dir / "clash"), "CANDLECAST_DB_PORT": mariadb["CANDLECAST_DB_PORT"]}
    with pytest.raises(local.MariaDBError, match="Address already in use"):
        local.start(env=clash, timeout=30)


def test_bootstrap_keeps_its_temp_tables_in_its_own_folder(
    server_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A TMPDIR that does not exist stands in for a shared /tmp whose files vanish under the bootstrap:
    # mariadb-install-db fails with it unless its mariadbd is given the server's own tmpdir.
    monkeypatch.setenv("TMPDIR", str(tmp_path / "nowhere"))
    server = local.local_server({"CANDLECAST_LOCAL_DIR": str(server_dir / "own"), "CANDLECAST_DB_PORT": "1"})
    account = local._server_account()
    local._prepare_folders(server, account)
    local._initialise(server, account)
    assert (server.datadir / "mysql" / "global_priv.frm").exists()


def test_start_right_after_a_sigkill_waits_for_the_dying_server_and_starts_a_fresh_one(
    server_dir: Path, mariadb: dict[str, str]
) -> None:
    env = {"CANDLECAST_LOCAL_DIR": str(server_dir / "killed"), "CANDLECAST_DB_PORT": str(free_port())}
    # Started by another process, as `make db-start` does, so the killed server is not this process's child.
    subprocess.run([sys.executable, "-m", "candlecast.mariadb", "start"], env={**os.environ, **env}, check=True,
                   capture_output=True, timeout=120)
    server = local.local_server(env)
    killed = local.running_pid(server)
    assert killed is not None
    try:
        os.kill(killed, signal.SIGKILL)
        local.start(env=env)  # at once: the killed mariadbd is still there, dying, for a second or so
        fresh = local.running_pid(server)
        assert fresh is not None and fresh != killed
        assert process_state(killed) in (None, "Z")
        engine = engine_for("loader", env=env)
        check_connection(engine, "restarted server")
        engine.dispose()
    finally:
        local.stop(env=env)


def test_a_pid_file_naming_a_zombie_or_another_program_is_not_a_running_server(tmp_path: Path) -> None:
    server = local.local_server({"CANDLECAST_LOCAL_DIR": str(tmp_path), "CANDLECAST_DB_PORT": "1"})
    server.pid_file.parent.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "30"])  # a recycled pid: alive, but not this datadir's mariadbd
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{other.pid}/cmdline").read_bytes():  # until its exec is complete
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.pid_file.write_text(f"{other.pid}\n")
        assert local.running_pid(server) is None
        os.kill(other.pid, signal.SIGKILL)
        while process_state(other.pid) != "Z":  # killed, not reaped: a zombie answers signal 0
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert live_pid(server.pid_file) is None
    finally:
        other.kill()
        other.wait()
