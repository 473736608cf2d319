"""Soak cycles through Airflow: consecutive ``dag.test()`` runs of the hourly DAG, one per replayed hour.

``dag.test()`` runs the DAG's tasks in this process (the Cosmos dbt tasks start dbt as subprocesses), so the
replay server's clock can be set before each interval exactly as for the other cycles. Airflow reads its
configuration once, at its first import: ``prepare`` pins it (a SQLite metadata DB under the soak's work
dir, retries off: the soak retries a failed interval itself, like the other cycles) and must run before
anything imports Airflow. The DAG tasks read their settings from the process environment, so the soak's
environment is laid over ``os.environ`` for the rest of the process: run the Airflow soak in a process of
its own (``make soak``, the benchmark).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from candlecast.settings import REPO_ROOT
from candlecast.settings.dags import HOURLY_DAG_ID
from tools.soak.harness import DONE, Attempt, CycleRun, only_health_failed

if TYPE_CHECKING:
    from tools.soak.harness import Soak

DAGS_DIR = REPO_ROOT / "dags"
AIRFLOW_PORT = 18390  # never served: dag.test needs no API server, but the config names one


def prepare(soak: Soak) -> Any:
    """Configure Airflow for the soak, migrate its metadata DB, make the dbt manifest; returns the hourly DAG."""
    from candlecast import dbt_runner
    from candlecast.airflow_local import LocalAirflow, airflow_env
    from candlecast.settings.dbt import DbtSettings

    work = soak.config.work_dir / "airflow"
    manifest_dir = work / "dbt-target"
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        del os.environ[key]
    os.environ.update(soak.env)
    os.environ.update(airflow_env(LocalAirflow(home=work / "home", port=AIRFLOW_PORT)))
    os.environ.update({"CANDLECAST_DAG_RETRIES": "0",
                       "CANDLECAST_DBT_MANIFEST": str(manifest_dir / "manifest.json")})
    dbt_runner.run_dbt(["parse"], env=os.environ, target_path=manifest_dir)

    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.models.pool import Pool
    from airflow.utils import db

    (work / "home").mkdir(parents=True, exist_ok=True)
    db.initdb()
    for pool, description in DbtSettings.from_env(os.environ).pools().items():
        Pool.create_or_update_pool(pool, slots=1, description=description, include_deferred=False)
    bag = BundleDagBag(dag_folder=DAGS_DIR, bundle_path=DAGS_DIR, bundle_name="dags-folder")
    if HOURLY_DAG_ID not in bag.dags:
        raise RuntimeError(f"{HOURLY_DAG_ID} not parsed from {DAGS_DIR}: {bag.import_errors}")
    return bag.dags[HOURLY_DAG_ID]


def run_through_airflow(soak: Soak, k: int) -> CycleRun:
    """Cycle ``k`` as the hourly DAG's run for the interval ending at ``plan.end(k)``, retried once."""
    if soak.airflow_dag is None:
        soak.airflow_dag = prepare(soak)
    cycle = CycleRun(k, soak.plan.end(k), "airflow", soak.plan.fault_of(k))
    for attempt in range(2):
        clock = soak.plan.clock(k, attempt)
        soak.server.set_clock(clock)
        started = time.perf_counter()
        state, failed = _dag_test(soak.airflow_dag, soak.plan.end(k))
        seconds = time.perf_counter() - started
        # the health task failed and nothing else did (all_steps_ok is upstream_failed because of it)
        unhealthy = state != "success" and only_health_failed(
            {bad.split("=")[0] for bad in failed.split(", ") if not bad.endswith("=upstream_failed")})
        status = "ok" if state == "success" else "unhealthy" if unhealthy else "failed"
        cycle.attempts.append(Attempt(clock, seconds, status, failed))
        if status in DONE:
            break
    return cycle


def _dag_test(dag: Any, end: Any) -> tuple[str, str]:
    from airflow.utils.session import create_session

    run = dag.test(logical_date=end)
    if run.state == "success":
        return "success", ""
    with create_session() as session:
        bad = sorted(f"{ti.task_id}={ti.state}" for ti in run.get_task_instances(session=session)
                     if ti.state != "success")
    return str(run.state), ", ".join(bad)
