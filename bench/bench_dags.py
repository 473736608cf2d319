"""Benchmark the orchestration: one hourly DAG run (``dag.test()``), wall time by task, and DAG parse time.

Targets: the hourly run ≤ 60 s on 2 cores; parsing each DAG file with Cosmos's DBT_MANIFEST load ≤ 1 s.
Prints figures and targets; never fails on timing.

Runs against the project's MariaDB (``make bench`` starts it) under a base of its own (``bench_dags``) and an
Airflow home of its own (``.local/bench/airflow``); candles come over HTTP from an in-process replay server.
Set-up (not timed): 68 days of history, then one weekly retrain so a production model exists.

    make bench        # or: .venv/bin/python bench/bench_dags.py
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from candlecast.airflow_local import LocalAirflow, airflow_env  # noqa: E402
from candlecast.settings import effective_env, local_dir  # noqa: E402

BASE = "bench_dags"
WORK = local_dir() / "bench" / "dags"
MANIFEST_DIR = WORK / "dbt-target"
DAGS = REPO / "dags"
HISTORY_START = datetime(2023, 11, 1, tzinfo=UTC)
HOUR_START = datetime(2024, 1, 8, 12, tzinfo=UTC)  # the benchmarked interval: [12:00, 13:00)
WEEKLY_RUN_AFTER = datetime(2024, 1, 7, 23, 30, tzinfo=UTC)
RUN_TARGET_S = 60.0
PARSE_TARGET_S = 1.0


def configure() -> None:
    """Pin Airflow's and the DAGs' settings before Airflow is imported (it reads them once)."""
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        del os.environ[key]
    os.environ.update(effective_env())  # the DB credentials, as `candlecast.withenv` would give them
    os.environ.update(airflow_env(LocalAirflow(home=WORK / "airflow", port=18280)))
    os.environ.update({
        "CANDLECAST_DB_SCHEMA": BASE,
        "CANDLECAST_MODEL_STORE": str(WORK / "models"),
        "CANDLECAST_EXTRACT_PRODUCTS": "BTC-USD",
        "CANDLECAST_DBT_MANIFEST": str(MANIFEST_DIR / "manifest.json"),
        "CANDLECAST_DAG_RETRIES": "0",
    })


def dbt_parse() -> None:
    from candlecast.dbt_runner import run_dbt

    run_dbt(["parse"], env=os.environ, args=["--quiet"], target_path=MANIFEST_DIR)


def fresh_base() -> None:
    from candlecast import mariadb
    from candlecast.settings import Schemas

    mariadb.provision(Schemas(BASE), fresh=True)
    shutil.rmtree(WORK / "models", ignore_errors=True)


def seed_history(replay_url: str) -> None:
    from candlecast.db import engine_for
    from candlecast.settings import ExtractSettings, Schemas
    from extract.pipeline import backfill

    engine = engine_for("loader")
    settings = ExtractSettings.from_env().with_(api_url=replay_url)
    backfill("BTC-USD", HISTORY_START, HOUR_START, engine=engine, schemas=Schemas(BASE), settings=settings,
             now=HOUR_START)
    engine.dispose()


def timed_run(dag, logical_date: datetime) -> tuple[float, list[tuple[str, float, str]]]:
    from airflow.utils.session import create_session

    t0 = time.perf_counter()
    dr = dag.test(logical_date=logical_date)
    wall = time.perf_counter() - t0
    with create_session() as session:
        tis = sorted(dr.get_task_instances(session=session), key=lambda ti: ti.start_date or datetime.max)
        rows = [(ti.task_id, (ti.end_date - ti.start_date).total_seconds() if ti.end_date and ti.start_date else 0.0,
                 str(ti.state)) for ti in tis]
    if dr.state != "success":
        raise SystemExit(f"{dag.dag_id} run failed: {[r for r in rows if r[2] != 'success']}")
    return wall, rows


def parse_times() -> dict[str, float]:
    """Each DAG file parsed in a fresh interpreter with Airflow already imported, as the DAG processor does;
    best of 3."""
    from candlecast.dag_parse import DAG_FILES, parse_dags

    out = {}
    for name in DAG_FILES:
        runs = []
        for _ in range(3):
            report = parse_dags(DAGS, (name,), env=os.environ)
            if report.import_errors:
                raise SystemExit(f"DAG import errors: {report.import_errors}")
            runs.append(report.files[name].seconds)
        out[name] = min(runs)
    return out


def main() -> int:
    import logging

    configure()
    WORK.mkdir(parents=True, exist_ok=True)
    dbt_parse()
    fresh_base()

    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.models.pool import Pool
    from airflow.utils import db

    from candlecast.settings.dbt import DEFAULT_POOL, POOL_DESCRIPTION
    from tools.replay import ReplayServer

    logging.getLogger().setLevel(logging.WARNING)
    db.initdb()
    Pool.create_or_update_pool(DEFAULT_POOL, slots=1, description=POOL_DESCRIPTION, include_deferred=False)
    with ReplayServer(rate=None) as server:
        os.environ["COINBASE_API_URL"] = server.url
        seed_history(server.url)
        bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS, bundle_name="dags-folder")
        if bag.import_errors:
            raise SystemExit(f"DAG import errors: {bag.import_errors}")
        weekly_wall, weekly = timed_run(bag.dags["candlecast_weekly_retrain"], WEEKLY_RUN_AFTER)
        hourly_wall, hourly = timed_run(bag.dags["candlecast_hourly"], HOUR_START + timedelta(hours=1))
    parse = parse_times()

    print(f"\nset-up: weekly retrain run {weekly_wall:.1f} s ("
          + ", ".join(f"{tid} {s:.1f}" for tid, s, _ in weekly) + ")")
    print(f"\none hourly run (dag.test, interval {HOUR_START:%Y-%m-%d %H:%M} UTC + 1 h), by task:")
    for task_id, seconds, _ in hourly:
        print(f"  {task_id:<55} {seconds:6.1f} s")
    dbt = sum(s for t, s, _ in hourly if t.startswith(("features.", "accuracy.")))
    n_dbt = sum(1 for t, _, _ in hourly if t.startswith(("features.", "accuracy.")))
    print(f"  {'(dbt tasks: ' + str(n_dbt) + ', together)':<55} {dbt:6.1f} s")
    verdict = "meets" if hourly_wall <= RUN_TARGET_S else "MISSES"
    print(f"hourly DAG run wall time: {hourly_wall:.1f} s (target <= {RUN_TARGET_S:.0f} s on 2 cores: {verdict})")
    for name, seconds in parse.items():
        verdict = "meets" if seconds <= PARSE_TARGET_S else "MISSES"
        print(f"parse {name} (DBT_MANIFEST): {seconds:.2f} s (target <= {PARSE_TARGET_S:.0f} s: {verdict})")
    load = os.getloadavg()
    print(f"(load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
