"""DAG tests: real Airflow 3 (``dag.test()`` in this process, a standalone server for the API and CLI tests), the
tests' MariaDB under the base ``ct_dags``, real dbt through Cosmos, and the replay server over HTTP.

Airflow reads its configuration once, when first imported, so its environment is pinned here, before any
test module imports it: its metadata in the database ``airflow_dags`` of the tests' own PostgreSQL
(``CANDLECAST_TEST_PG_PORT``, default 5408, data under ``.local/test/postgres``; the standalone server's in
``airflow_api``), its home under ``.local/test/airflow``, the repo's ``dags/``, telemetry off. The
``CANDLECAST_*`` variables the DAGs read (schema base, model store, API URL) are set by the package-scoped
``dag_env`` fixture and restored when the last DAG test is done, so other areas never see them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from candlecast import dbt_runner
from candlecast.airflow_local import LocalAirflow, airflow_env
from candlecast.hours import HOUR
from candlecast.postgres import LocalPostgres
from tests.support import MailSink, free_port

if TYPE_CHECKING:
    from tests.dags.test_running_airflow_api import _Boot
    from tools.replay import ReplayServer

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_LOCAL_DIR = REPO_ROOT / ".local" / "test"

BASE = "ct_dags"
DIRECT_BASE = "ct_dags_direct"  # the same hours run directly (no Airflow), to compare tables with
DAGS_DIR = REPO_ROOT / "dags"
WORK_DIR = TEST_LOCAL_DIR / "dags"
MANIFEST_DIR = WORK_DIR / "dbt-target"

# The bundled sample runs 2021-12-14 .. 2024-01-09 23:00. Sixty-eight days of history are enough for the
# 168 h feature windows, a 4-week validation split and a 1-week holdout, and keep the tests quick.
HISTORY_START = datetime(2023, 11, 1, tzinfo=UTC)
# The weekly run closing Sunday 2024-01-07 23:30 UTC: trains before 2023-12-31 23:00, holdout the week after.
WEEKLY_RUN_AFTER = datetime(2024, 1, 7, 23, 30, tzinfo=UTC)
# The hourly run for the hour 2024-01-08 12:00 (data interval [12:00, 13:00)), then the next one via the API.
HOURLY_START = datetime(2024, 1, 8, 12, tzinfo=UTC)


# The tests' PostgreSQL: one server, a database per Airflow (this process's, and the standalone one's).
TEST_PG = LocalPostgres(root=TEST_LOCAL_DIR / "postgres", port=int(os.environ["CANDLECAST_TEST_PG_PORT"]))
TEST_AIRFLOW = LocalAirflow(home=TEST_LOCAL_DIR / "airflow", port=int(os.environ["CANDLECAST_TEST_AIRFLOW_PORT"]),
                            postgres=TEST_PG, database="airflow_dags")

for _key in [k for k in os.environ if k.startswith("AIRFLOW")]:
    del os.environ[_key]
os.environ.update(airflow_env(TEST_AIRFLOW))
# Task failures in a test must fail the run now, not after minutes of exponential backoff.
os.environ["CANDLECAST_DAG_RETRIES"] = "0"
os.environ["CANDLECAST_DBT_MANIFEST"] = str(MANIFEST_DIR / "manifest.json")
# Failure alerts mailed, as an operator would configure them, to the tests' own SMTP server (``mail_sink``):
# read when the DAG files are parsed, so pinned here. A failure while no sink listens only logs the refusal.
MAIL_SINK_PORT = free_port()
ALERT_TO = "ops@candlecast.invalid"
os.environ["CANDLECAST_ALERT_EMAIL"] = ALERT_TO
os.environ["CANDLECAST_ALERT_FROM"] = "airflow@candlecast.invalid"
os.environ["CANDLECAST_ALERT_SMTP_CONN_ID"] = "candlecast_test_smtp"
os.environ["AIRFLOW_CONN_CANDLECAST_TEST_SMTP"] = json.dumps({
    "conn_type": "smtp", "host": "127.0.0.1", "port": MAIL_SINK_PORT,
    "extra": {"disable_tls": True, "disable_ssl": True, "retry_limit": 0, "timeout": 10},
})


@pytest.fixture(scope="package")
def dbt_manifest() -> Path:
    """A manifest of the current dbt project (``dbt parse``: no database), in a target dir of the tests' own."""
    dbt_runner.run_dbt(["parse"], env=os.environ, target_path=MANIFEST_DIR)
    return MANIFEST_DIR / "manifest.json"


@pytest.fixture(scope="package")
def airflow_db() -> None:
    """The metadata DB migrated (what ``airflow db migrate`` does); idempotent, so reused across sessions."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    from candlecast import postgres
    from candlecast.settings.dbt import DbtSettings

    TEST_AIRFLOW.home.mkdir(parents=True, exist_ok=True)
    postgres.start_server(TEST_PG, databases=(TEST_AIRFLOW.database,))
    db.initdb()
    # Runs start at their first try in every session: a run re-run over an earlier session's takes the path of a
    # cleared run (each watcher group's build skips and its model tasks build one model each: slower).
    from airflow.api.common.delete_dag import delete_dag
    from airflow.exceptions import AirflowException

    for dag_id in ("candlecast_hourly", "candlecast_weekly_retrain"):
        try:
            delete_dag(dag_id)
        except AirflowException:  # not there yet; or a crashed session left a task running: the slower path
            pass
    # What `make airflow` creates too: the one-slot pools of the dbt builds and of the model tasks.
    for pool, description in DbtSettings.from_env({}).pools().items():
        Pool.create_or_update_pool(pool, slots=1, description=description, include_deferred=False)


@pytest.fixture(scope="package")
def dagbag(dbt_manifest: Path):
    """Both DAG files parsed the way the DAG processor and the workers do (a bundle-aware DagBag)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS_DIR, bundle_path=DAGS_DIR, bundle_name="dags-folder")


@pytest.fixture(scope="package")
def mail_sink() -> Iterator[MailSink]:
    with MailSink(MAIL_SINK_PORT) as sink:
        yield sink


@pytest.fixture(scope="package")
def replay_server() -> Iterator[ReplayServer]:
    from tools.replay import ReplayServer

    with ReplayServer(rate=None) as server:
        yield server


def store_dir(base: str) -> Path:
    return WORK_DIR / "models" / base


@pytest.fixture(scope="package")
def dag_env(admin_engine, provision_schemas, replay_server: ReplayServer) -> Iterator[dict[str, str]]:
    """The run-time env of the DAGs' tasks, in this process (dag.test runs tasks in-process; dbt inherits it).

    Both bases start empty, so every session compares runs made from the same nothing.
    """
    for base in (BASE, DIRECT_BASE):
        provision_schemas(base, fresh=True)
        shutil.rmtree(store_dir(base), ignore_errors=True)
    values = {
        "CANDLECAST_DB_SCHEMA": BASE,
        "CANDLECAST_MODEL_STORE": str(store_dir(BASE)),
        "CANDLECAST_EXTRACT_PRODUCTS": "BTC-USD",
        "COINBASE_API_URL": replay_server.url,
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_dag(dag, logical_date: datetime, **kwargs):
    """``dag.test()`` and a readable failure: which task instances did not succeed."""
    dr = dag.test(logical_date=logical_date, **kwargs)
    if dr.state != "success":
        from airflow.utils.session import create_session

        with create_session() as session:
            tis = dr.get_task_instances(session=session)
            bad = sorted(f"{ti.task_id}={ti.state}" for ti in tis if ti.state != "success")
        pytest.fail(f"{dag.dag_id} run for {logical_date} ended {dr.state}: {bad}")
    return dr


# Background work started early so it overlaps the DAG runs (each is waited for where it is needed).
BOOTING: dict[str, _Boot] = {}


# The test modules that drive the one standalone Airflow of the session (``api_airflow``).
STANDALONE_USERS = ("test_running_airflow_api.py", "test_the_airflow_cli.py")


@pytest.fixture(scope="package")
def airflow_booting(dag_env, dbt_manifest, request):
    """Boot the API and CLI tests' Airflow now if those tests are part of this session."""
    if "api" not in BOOTING and any(item.fspath.basename in STANDALONE_USERS for item in request.session.items):
        from tests.dags.test_running_airflow_api import _boot

        BOOTING["api"] = _boot()


@pytest.fixture(scope="package")
def api_airflow(dag_env, dbt_manifest) -> Iterator[LocalAirflow]:
    """Airflow standalone for the API and CLI tests, one for the session, started in the background (its ~30 s
    boot overlaps the DAG runs when the whole package runs: see ``airflow_booting``); waited for here."""
    from candlecast.airflow_local import stop
    from tests.dags.test_running_airflow_api import _boot

    # One boot per session: a later airflow_booting must not restart the instance this fixture handed out.
    if "api" not in BOOTING:
        BOOTING["api"] = _boot()
    boot = BOOTING["api"]
    boot.thread.join(timeout=400)
    if boot.error is not None:
        raise boot.error
    assert boot.airflow is not None, "the test Airflow did not start within 400 s"
    try:
        yield boot.airflow
    finally:
        stop(boot.env)


@pytest.fixture(scope="package")
def direct_run(dag_env):
    """The same hours run by the cycle command's functions into DIRECT_BASE, in the background
    (see ``pipeline.DirectRun``)."""
    from tests.dags import pipeline

    return pipeline.DirectRun(pipeline.base_env(DIRECT_BASE, os.environ), HISTORY_START, HOURLY_START,
                              WEEKLY_RUN_AFTER.replace(minute=0))


@pytest.fixture(scope="package")
def history(dag_env, direct_run, airflow_booting) -> None:
    """The DAG base holds the history before the first DAG run (fetched over HTTP from the replay server);
    the direct run fetches the same into its own base."""
    from tests.dags import pipeline
    from tests.support import backfill_history

    backfill_history(pipeline.base_env(BASE, os.environ), HISTORY_START, HOURLY_START)


@pytest.fixture(scope="package")
def weekly_run(dagbag, airflow_db, history, direct_run):
    # Run after Sunday 2024-01-07 23:30: the interval [2023-12-31 23:30, 2024-01-07 23:30).
    dr = run_dag(dagbag.dags["candlecast_weekly_retrain"], WEEKLY_RUN_AFTER)
    direct_run.wait("weekly")
    return dr


@pytest.fixture(scope="package")
def hourly_run(dagbag, weekly_run, direct_run):
    # A manual run at 13:00 covers the interval that ends there: [12:00, 13:00).
    dr = run_dag(dagbag.dags["candlecast_hourly"], HOURLY_START + HOUR)
    direct_run.wait("hourly")
    return dr
