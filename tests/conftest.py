"""Shared test set-up: a real MariaDB of the tests' own (port 3408, data under .local/test).

The environment is pinned here, before any test module is imported, so a developer's exported
production settings can never be touched by the suite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_LOCAL_DIR = REPO_ROOT / ".local" / "test"

_test_port = os.environ.get("CANDLECAST_TEST_DB_PORT", "3408")
# Two checkouts on one machine can run their suites side by side with other ports.
_test_airflow_port = os.environ.get("CANDLECAST_TEST_AIRFLOW_PORT", "18180")
_test_kill_port = os.environ.get("CANDLECAST_TEST_KILL_DB_PORT", "3409")  # the killed-database test's own server
_test_soak_port = os.environ.get("CANDLECAST_TEST_SOAK_DB_PORT", "3410")  # the soak's own server (tests/soak)
_test_pg_port = os.environ.get("CANDLECAST_TEST_PG_PORT", "5408")  # the tests' PostgreSQL (Airflow's metadata)
_test_redis_port = os.environ.get("CANDLECAST_TEST_REDIS_PORT", "6408")  # the Celery test's broker (tests/celery)
_soak = os.environ.get("CANDLECAST_SOAK")  # `make soak`: which soak tests/soak runs
_celery = os.environ.get("CANDLECAST_CELERY_TEST")  # `make test-celery`: tests/celery runs the CeleryExecutor
for _key in [k for k in os.environ if k.startswith("CANDLECAST_")]:
    del os.environ[_key]
os.environ["CANDLECAST_LOCAL_DIR"] = str(TEST_LOCAL_DIR)
os.environ["CANDLECAST_DB_PORT"] = _test_port
os.environ["CANDLECAST_TEST_DB_PORT"] = _test_port  # pytest-xdist workers import this file again
os.environ["CANDLECAST_TEST_AIRFLOW_PORT"] = _test_airflow_port
os.environ["CANDLECAST_TEST_KILL_DB_PORT"] = _test_kill_port
os.environ["CANDLECAST_TEST_SOAK_DB_PORT"] = _test_soak_port
os.environ["CANDLECAST_TEST_PG_PORT"] = _test_pg_port
os.environ["CANDLECAST_TEST_REDIS_PORT"] = _test_redis_port
if _soak is not None:
    os.environ["CANDLECAST_SOAK"] = _soak
if _celery is not None:
    os.environ["CANDLECAST_CELERY_TEST"] = _celery
os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "False"


# `make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadscope`). A test directory is the unit
# of work: its modules share databases (one base per directory or module), servers (the test Airflow of
# tests/dags) and module fixtures, so one worker runs all of it, in order. Directories share only the test
# MariaDB, each on bases of its own. The longest go first so that the two workers end together.
SLOWEST_FIRST = ("soak", "cycle", "dags", "dbt", "ml", "serve", "extract", "foundation")


def _directory(item: pytest.Item) -> str:
    return Path(str(item.path)).relative_to(REPO_ROOT / "tests").parts[0]


def _rank(directory: str) -> int:
    return SLOWEST_FIRST.index(directory) if directory in SLOWEST_FIRST else len(SLOWEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _rank(_directory(item)))  # stable: a directory's own order is kept


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling with the test directory as the scope (its ``loadgroup`` marks do not reach the
    node ids under pytest 9, and a module is too small a unit here); scopes go out in collection order."""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class DirectoryScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::", 1)[0].rsplit("/", 1)[0]  # tests/cycle/test_cli.py::x -> tests/cycle

    return DirectoryScheduling(config, log)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[dict[str, str]]:
    """Start (or reuse) the test server and export its credentials, so subprocesses (dbt) see them too."""
    from filelock import FileLock

    from candlecast import mariadb as local
    from candlecast.settings import read_env_file

    TEST_LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(TEST_LOCAL_DIR / "mariadb-start.lock"):  # two workers start it at once; the second finds it up
        server = local.start()
    creds = read_env_file(server.credentials)
    os.environ.update(creds)
    yield creds


@pytest.fixture(scope="session")
def admin_engine(mariadb: dict[str, str]):
    from candlecast.db import engine_for

    engine = engine_for("admin")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def provision_schemas(mariadb: dict[str, str]):
    """Factory: ``provision_schemas("ct_extract")`` gives a test area databases of its own.

    Returns the ``Schemas``; pass ``{"CANDLECAST_DB_SCHEMA": base}`` to subprocesses such as dbt.
    ``fresh=True`` drops the base's databases first (set-up does it: the admin role drops only what it was granted).
    """
    from candlecast import mariadb as local
    from candlecast.settings import Schemas

    def _provision(base: str, fresh: bool = False) -> Schemas:
        schemas = Schemas(base)
        local.provision(schemas, fresh=fresh)
        return schemas

    return _provision


@pytest.fixture
def server_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder for a private server's CANDLECAST_LOCAL_DIR that the server's own user can reach.

    Started by root, mariadbd runs as ``mysql``, which cannot enter pytest's tmp_path (its root is 0700).
    """
    import shutil
    import tempfile

    parent = TEST_LOCAL_DIR / "private"
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:20] + "-", dir=parent))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
