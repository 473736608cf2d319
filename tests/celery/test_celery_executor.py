"""The CeleryExecutor on this machine, started as ``make airflow EXECUTOR=celery WORKERS=2 QUEUES="retrain hourly"``
starts it: the project's Redis as broker, PostgreSQL as the metadata database, two Celery workers with local folders
of their own. The weekly retrain runs on worker 1 (queue ``retrain``), the hourly cycle on worker 2 (``hourly``),
whose predict loads the model worker 1 trained through the shared model store; and every table equals that of a
LocalExecutor run (``airflow standalone``, as ``make airflow``) of the same hours into another base.

Its own target, ``make test-celery``: two Airflow instances in turn take several minutes, past ``make test``'s
budget; there (without ``CANDLECAST_CELERY_TEST=1``) it is skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from candlecast.airflow_api import AirflowApi
from candlecast.airflow_local import local_airflow, start, stop
from candlecast.postgres import LocalPostgres
from tests.support import backfill_history, differences, snapshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("CANDLECAST_CELERY_TEST") != "1",
                       reason="the CeleryExecutor test runs in its own target: make test-celery"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_LOCAL_DIR = REPO_ROOT / ".local" / "test"
TEST_PG = LocalPostgres(root=TEST_LOCAL_DIR / "postgres", port=int(os.environ["CANDLECAST_TEST_PG_PORT"]))
BASES = {"celery": "ct_celery", "local": "ct_celery_local"}
HISTORY_START = datetime(2023, 11, 1, tzinfo=UTC)
HOURLY_START = datetime(2024, 1, 8, 12, tzinfo=UTC)  # history ends here; the hourly runs cover 12:00 and 13:00
WEEKLY_LOGICAL = "2024-01-07T23:30:00Z"  # the week [2023-12-31 23:30, 2024-01-07 23:30)
HOURLY_LOGICAL = ("2024-01-08T13:00:00Z", "2024-01-08T14:00:00Z")  # a manual run covers the hour ending there
WEEKLY, HOURLY = "candlecast_weekly_retrain", "candlecast_hourly"


def _free_port(span: int = 6) -> int:
    """A port whose next ``span`` are free too (the log servers of the triggerer and each worker)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 65000:
            continue
        try:
            for p in range(port + 1, port + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port range for the test Airflow")


class Api(AirflowApi):
    def run(self, dag_id: str, logical_date: str, timeout: float = 900) -> list[dict[str, Any]]:
        """Trigger one run, wait for its end; its task instances (failing the test, naming them, unless success)."""
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run_id = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": logical_date})["dag_run_id"]
        state = self.wait_for_run(dag_id, run_id, timeout)
        tis: list[dict[str, Any]] = self.call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        if state != "success":
            bad = sorted(f"{t['task_id']}={t['state']}@{t['hostname']}" for t in tis if t["state"] != "success")
            pytest.fail(f"{dag_id} run {run_id} ended {state}; not successful: {bad}")
        return tis


def _run_instance(kind: str, replay_url: str) -> dict[str, list[dict[str, Any]]]:
    """Start an Airflow of ``kind`` (celery or local) on its own base and metadata database, run the weekly retrain
    and two hourly intervals through its REST API, stop it; the task instances of each run."""
    from candlecast import postgres

    base = BASES[kind]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "CANDLECAST_DB_SCHEMA": base,
        "CANDLECAST_AIRFLOW_HOME": str(TEST_LOCAL_DIR / f"airflow-{kind}"),
        "CANDLECAST_AIRFLOW_PORT": str(_free_port()),
        "CANDLECAST_PG_PORT": str(TEST_PG.port),
        "CANDLECAST_AIRFLOW_DB": f"airflow_{kind}",
        "COINBASE_API_URL": replay_url,
        "CANDLECAST_EXTRACT_PRODUCTS": "BTC-USD",
        "CANDLECAST_DAG_RETRIES": "0",
        # Only the runs the test triggers: no scheduled ones beside them.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    })
    env.pop("CANDLECAST_MODEL_STORE", None)
    if kind == "celery":
        # Each worker's model store is the default under its own local folder: only the shared store connects them.
        env.update({
            "CANDLECAST_AIRFLOW_EXECUTOR": "celery", "CANDLECAST_AIRFLOW_WORKERS": "2",
            "CANDLECAST_WORKER_QUEUES": "retrain hourly", "CANDLECAST_RETRAIN_QUEUE": "retrain",
            "CANDLECAST_HOURLY_QUEUE": "hourly", "CANDLECAST_REDIS_PORT": os.environ["CANDLECAST_TEST_REDIS_PORT"],
        })
        shutil.rmtree(TEST_LOCAL_DIR / "workers", ignore_errors=True)
    else:
        env["CANDLECAST_MODEL_STORE"] = str(TEST_LOCAL_DIR / "celery-reference" / "models")
        shutil.rmtree(TEST_LOCAL_DIR / "celery-reference", ignore_errors=True)
    airflow = local_airflow(env)
    stop(env)  # one a crashed session left behind
    shutil.rmtree(airflow.home, ignore_errors=True)
    postgres.start_server(TEST_PG)
    postgres.ensure_database(TEST_PG, f"airflow_{kind}", fresh=True)
    backfill_history(env, HISTORY_START, HOURLY_START)
    start(env, timeout=600)
    try:
        api = Api(airflow)
        api.wait_for_dag(WEEKLY)
        api.wait_for_dag(HOURLY)
        runs = {"weekly": api.run(WEEKLY, WEEKLY_LOGICAL)}
        for i, logical in enumerate(HOURLY_LOGICAL):
            runs[f"hourly-{i + 1}"] = api.run(HOURLY, logical)
        return runs
    finally:
        stop(env)


@pytest.fixture(scope="module")
def runs(admin_engine, provision_schemas) -> Iterator[dict[str, dict[str, list[dict[str, Any]]]]]:
    from tools.replay import ReplayServer

    for base in BASES.values():
        provision_schemas(base, fresh=True)
    # The manifest Cosmos renders the dbt tasks from, as `make airflow` parses it first (`make dbt-parse`).
    from candlecast.dbt_runner import main as dbt

    assert dbt(["--quiet", "parse"]) == 0
    with ReplayServer(rate=None) as replay:
        yield {kind: _run_instance(kind, replay.url) for kind in ("celery", "local")}


def test_the_retrain_runs_on_one_worker_and_the_hourly_cycle_on_the_other(runs) -> None:
    celery = runs["celery"]

    def ran(run: str) -> list[dict[str, Any]]:
        # A Cosmos model task the group's one build already settled never reaches a worker: no hostname.
        return [t for t in celery[run] if t["hostname"]]

    assert {t["queue"] for t in celery["weekly"]} == {"retrain"}
    assert {t["hostname"] for t in ran("weekly")} == {"worker-1"}
    # the retrain group is mapped over the product batches: its tasks are named inside the group
    assert {t["task_id"] for t in ran("weekly")} >= {"retrain.train", "retrain.evaluate", "retrain.promote"}
    for name in ("hourly-1", "hourly-2"):
        assert {t["queue"] for t in celery[name]} == {"hourly"}
        assert {t["hostname"] for t in ran(name)} == {"worker-2"}
        assert {t["task_id"] for t in ran(name)} >= {"extract", "predict"}


def test_the_predicting_worker_loaded_the_model_the_training_worker_stored(runs, admin_engine) -> None:
    from sqlalchemy import text

    with admin_engine.connect() as conn:
        served = conn.execute(text(
            f"select distinct model_version from `{BASES['celery']}_ml`.`predictions` where target_hour > :h"),
            {"h": HOURLY_START}).scalars().all()
    assert served, "no forecast for the hours the hourly runs covered"
    caches = {name: TEST_LOCAL_DIR / "workers" / name / "models" for name in ("worker-1", "worker-2")}
    for version in served:
        # Trained and stored on worker 1; worker 2 had never seen it and fetched it into its own cache.
        for name, cache in caches.items():
            assert any(cache.rglob(f"*{version}*")), f"{version} not in {name}'s local model cache {cache}"


def test_the_tables_equal_those_of_a_local_executor_run_of_the_same_hours(runs, admin_engine) -> None:
    celery, local = snapshot(admin_engine, BASES["celery"]), snapshot(admin_engine, BASES["local"])
    assert celery["_ml.predictions"], "the Celery run wrote no forecast"
    assert differences(celery, local, names=("CeleryExecutor run", "LocalExecutor run")) == []
