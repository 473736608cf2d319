"""Least privilege, checked on the real server: every role against every database, FILE, and the server itself.

The matrix tried here is the one the README's Security section documents (parsed from it): a role may do
exactly what the table says, and nothing more.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import psutil
import pymysql
import pytest

from candlecast import mariadb as local
from candlecast.settings import ROLES, Schemas, db_settings
from tests.support import free_port

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
BASE = "ct_priv"
# Not part of any base, and a look-alike of one (``_`` is a wildcard in a GRANT): nobody may touch it.
OTHER = "ct_privXraw"
OPERATIONS = {"S": "select", "I": "insert", "U": "update", "D": "delete", "C": "create", "X": "drop"}
COLUMNS = ("{base}", "{base}_raw", "{base}_staging", "{base}_intermediate", "{base}_marts", "{base}_ml", "other")


def documented_matrix() -> dict[str, dict[str, str]]:
    """The README's table: role -> database column -> letters of what it may do ("" for nothing)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| role | `{base}`"))
    matrix: dict[str, dict[str, str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        role = cells[0].split()[0]
        matrix[role] = {col: ("" if cell == "-" else cell) for col, cell in zip(COLUMNS, cells[1:8], strict=True)}
        matrix[role]["FILE"] = cells[8]
    return matrix


def _database(column: str, schemas: Schemas) -> str:
    return OTHER if column == "other" else column.format(base=schemas.base)


@pytest.fixture(scope="module")
def probes(mariadb: dict[str, str]) -> Iterator[Schemas]:
    """A fresh base plus the look-alike database, each with a one-row ``probe`` table, made by set-up."""
    server = local.local_server()
    schemas = Schemas(BASE)
    local.provision(schemas, fresh=True)
    sql = [f"drop database if exists `{OTHER}`;", f"create database `{OTHER}`;"]
    for database in (*schemas.all(), OTHER):
        sql += [f"create table `{database}`.probe (x int);", f"insert into `{database}`.probe values (1);"]
    local.superuser_sql(server, "\n".join(sql))
    yield schemas
    local.superuser_sql(server, f"drop database if exists `{OTHER}`;")


def _connect(role: str) -> pymysql.connections.Connection:
    s = db_settings(role)  # type: ignore[arg-type]
    return pymysql.connect(host=s.host, port=s.port, user=s.user, password=s.password, autocommit=True)


def _allowed(cur: pymysql.cursors.Cursor, sql: str) -> bool:
    try:
        cur.execute(sql)
        return True
    except (pymysql.err.OperationalError, pymysql.err.ProgrammingError) as exc:
        if exc.args[0] in (1044, 1045, 1142, 1143, 1227):  # access denied, in its several forms
            return False
        raise


def observed_matrix(schemas: Schemas) -> dict[str, dict[str, str]]:
    server = local.local_server()
    matrix: dict[str, dict[str, str]] = {}
    for role in ROLES:
        matrix[role] = {}
        conn = _connect(role)
        try:
            with conn.cursor() as cur:
                for column in COLUMNS:
                    db = _database(column, schemas)
                    # A table of the role's own to drop, made by set-up, so DROP is tried on something real.
                    local.superuser_sql(server, f"create table if not exists `{db}`.drop_me_{role} (x int);")
                    tries = {
                        "S": f"select x from `{db}`.probe",
                        "I": f"insert into `{db}`.probe values (2)",
                        "U": f"update `{db}`.probe set x = x",
                        "D": f"delete from `{db}`.probe where x = 2",
                        "C": f"create table `{db}`.made_by_{role} (x int)",
                        "X": f"drop table `{db}`.drop_me_{role}",
                    }
                    matrix[role][column] = "".join(op for op, sql in tries.items() if _allowed(cur, sql))
                    local.superuser_sql(server, f"drop table if exists `{db}`.made_by_{role}, `{db}`.drop_me_{role};")
                outfile = local.local_server().files_dir / f"outfile-{role}.txt"
                wrote = _allowed(cur, f"select 'x' into outfile '{outfile}'")
                cur.execute(f"select load_file('{local.local_server().files_dir / 'readable.txt'}')")
                read = cur.fetchone()[0] is not None
                matrix[role]["FILE"] = "yes" if wrote or read else "no"
        finally:
            conn.close()
    return matrix


def test_each_role_may_do_exactly_what_the_readme_documents(probes: Schemas) -> None:
    server = local.local_server()
    readable = server.files_dir / "readable.txt"
    local.superuser_sql(server, f"select 'content' into outfile '{readable}';")
    # The superuser reads it back: a NULL from a role below is the missing privilege, not a missing file.
    assert local.superuser_sql(server, f"select load_file('{readable}') is not null;").strip() == "1"
    try:
        documented = documented_matrix()
        assert set(documented) == set(ROLES)
        assert observed_matrix(probes) == documented
    finally:
        for leftover in server.files_dir.glob("*.txt"):
            leftover.unlink()


def test_no_role_holds_file_super_or_grant_and_the_admin_is_local_only(mariadb: dict[str, str]) -> None:
    server = local.local_server()
    hosts = local.superuser_sql(server, "select user, host from mysql.user order by user, host;")
    accounts = [tuple(line.split("\t")) for line in hosts.splitlines()]
    admin = mariadb["CANDLECAST_ADMIN_USER"]
    assert sorted(h for u, h in accounts if u == admin) == ["127.0.0.1", "localhost"]
    for role in ROLES:
        user = mariadb[f"CANDLECAST_{role.upper()}_USER"]
        for host in [h for u, h in accounts if u == user]:
            grants = local.superuser_sql(server, f"show grants for '{user}'@'{host}';")
            assert "GRANT OPTION" not in grants, grants
            on_everything = [g for g in grants.splitlines() if " ON *.* " in g]
            expected = "GRANT PROCESS ON *.*" if role == "admin" else "GRANT USAGE ON *.*"
            assert [g.split(" TO ")[0] for g in on_everything] == [expected], grants


def test_server_runs_unprivileged_with_files_confined_and_local_infile_off(mariadb: dict[str, str]) -> None:
    server = local.local_server()
    pid = local.running_pid(server)
    assert pid is not None
    if os.geteuid() == 0:
        assert psutil.Process(pid).username() == local.SERVER_OS_USER
        for owned in (server.datadir, server.run_dir, server.tmpdir, server.files_dir):
            assert owned.owner() == local.SERVER_OS_USER, owned
    assert server.credentials.owner() == psutil.Process().username()
    assert stat.S_IMODE(server.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.datadir.stat().st_mode) == 0o700
    variables = local.superuser_sql(server, "select @@secure_file_priv, @@local_infile;").split("\t")
    assert variables[0].rstrip("/") == str(server.files_dir)
    assert variables[1].strip() == "0"


def test_reader_needs_tls_when_remote_consumers_are_switched_on(server_dir: Path, mariadb: dict[str, str]) -> None:
    env = {"CANDLECAST_LOCAL_DIR": str(server_dir), "CANDLECAST_DB_PORT": str(free_port()), "CANDLECAST_DB_TLS": "1"}
    server = local.start(env=env)
    try:
        reader = db_settings("reader", env)
        assert stat.S_IMODE((server.tls_dir / "ca.key").stat().st_mode) == 0o600
        with pytest.raises(pymysql.err.OperationalError) as refused:
            pymysql.connect(host=reader.host, port=reader.port, user=reader.user, password=reader.password,
                            ssl_disabled=True)  # a plain connection (PyMySQL uses TLS when offered)
        assert refused.value.args[0] == 1045
        conn = pymysql.connect(host=reader.host, port=reader.port, user=reader.user, password=reader.password,
                               ssl_ca=str(server.ca_file), ssl_verify_cert=True, ssl_verify_identity=True)
        try:
            with conn.cursor() as cur:
                cur.execute("show session status like 'Ssl_version'")
                assert re.match(r"TLSv1\.[23]", cur.fetchone()[1])
        finally:
            conn.close()
    finally:
        local.stop(env=env)
