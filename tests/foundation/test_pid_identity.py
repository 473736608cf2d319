"""A pid file is trusted only for the process we started: a recycled pid is reported and removed, never signalled."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlecast import airflow_local, mariadb, postgres
from candlecast.pidfile import process_state


def _spawn(*argv: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(argv))
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(argv[0].encode()):  # exec complete
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live program whose pid a stale pid file could name after a reboot."""
    proc = _spawn("sleep", "60")
    yield proc
    proc.kill()
    proc.wait()


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None and process_state(proc.pid) not in (None, "Z")


def test_mariadb_stop_and_status_leave_an_unrelated_process_alone_and_drop_its_pid_file(
        tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    env = {"CANDLECAST_LOCAL_DIR": str(tmp_path), "CANDLECAST_DB_PORT": "1"}
    server = mariadb.local_server(env)
    server.pid_file.parent.mkdir(parents=True)

    server.pid_file.write_text(f"{bystander.pid}\n")
    report = mariadb.status(env)
    assert report.startswith("stopped") and "stale pid file" in report and str(bystander.pid) in report
    assert not server.pid_file.exists()

    server.pid_file.write_text(f"{bystander.pid}\n")
    assert mariadb.stop(env) is False
    assert not server.pid_file.exists()
    time.sleep(0.2)  # a SIGTERM would have landed by now
    assert _alive(bystander)


def test_a_program_that_merely_names_our_datadir_is_not_our_server(tmp_path: Path) -> None:
    env = {"CANDLECAST_LOCAL_DIR": str(tmp_path), "CANDLECAST_DB_PORT": "1"}
    server = mariadb.local_server(env)
    server.pid_file.parent.mkdir(parents=True)
    # Right arguments, wrong executable: a shell whose command line carries --datadir=<ours>.
    impostor = _spawn("sh", "-c", "sleep 60; true", "sh", f"--datadir={server.datadir}")
    try:
        server.pid_file.write_text(f"{impostor.pid}\n")
        assert mariadb.running_pid(server) is None
        assert mariadb.stop(env) is False
        time.sleep(0.2)
        assert _alive(impostor)
    finally:
        impostor.kill()
        impostor.wait()


def test_airflow_stop_never_signals_a_recycled_pid_or_its_process_group(
        tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    env = {"CANDLECAST_AIRFLOW_HOME": str(tmp_path), "CANDLECAST_AIRFLOW_PORT": "1"}
    airflow = airflow_local.local_airflow(env)
    airflow.pid_file.write_text(f"{bystander.pid}\n")
    assert airflow_local.running_pid(airflow) is None
    assert airflow_local.stop(env) is False
    assert not airflow.pid_file.exists()
    time.sleep(0.2)
    assert _alive(bystander)


def test_postgres_stop_never_signals_a_recycled_pid(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    env = {"CANDLECAST_LOCAL_DIR": str(tmp_path), "CANDLECAST_PG_PORT": "1"}
    server = postgres.local_postgres(env)
    server.datadir.mkdir(parents=True)
    server.pid_file.write_text(f"{bystander.pid}\n{server.datadir}\n")  # postmaster.pid's first lines
    assert postgres.running_pid(server) is None
    assert postgres.status(env).startswith("stopped")
    assert postgres.stop(env) is False
    assert not server.pid_file.exists()
    time.sleep(0.2)
    assert _alive(bystander)
