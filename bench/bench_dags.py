"""Benchmark the orchestration: real hourly runs by Airflow's scheduler against the direct floor, both measured in
this run; then ``dag.test()`` of one hourly run, wall time by task, and DAG parse time.

Targets:
- a real hourly run (``airflow standalone``, LocalExecutor, the scheduler; from the run's start to its
  success, Airflow's own timestamps) <= 1.25x the direct floor: the same hour's steps run one after the other
  without Airflow, as ``python -m cycle`` runs them (each Python step in a process of its own, each dbt step
  one ``dbt build`` of its selection). Median of the timed hours; each hour's floor is run right before its
  real run, on the same data (every step is idempotent, so both do the same work).
- ``dag.test()`` of one hourly run <= 60 s on 2 cores (secondary: one process, no scheduler);
- parsing each DAG file with Cosmos's DBT_MANIFEST load <= 1 s.
Prints figures, targets and the machine's load; never fails on timing.

Runs against the project's MariaDB (``make bench`` starts it) under a base of its own (``bench_dags``) and Airflow
homes of its own (``.local/bench/dags/``; the standalone Airflow keeps its metadata in the project's PostgreSQL,
database ``bench_dags_airflow``, made fresh each run, and listens on ``CANDLECAST_BENCH_AIRFLOW_PORT``,
default 18280, and the two ports after it); candles come over HTTP from an in-process replay server. Set-up (not
timed): 68 days of history, one weekly retrain so a production model exists, one warm-up hour each way.

    make bench        # or: .venv/bin/python bench/bench_dags.py [--hours N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from candlecast.airflow_api import AirflowApi  # noqa: E402
from candlecast.airflow_local import LocalAirflow, airflow_env  # noqa: E402
from candlecast.settings import effective_env, local_dir  # noqa: E402

BASE = "bench_dags"
WORK = local_dir() / "bench" / "dags"
MANIFEST_DIR = WORK / "dbt-target"
DAGS = REPO / "dags"
DAG_ID = "candlecast_hourly"
AIRFLOW_DB = "bench_dags_airflow"  # the real runs' metadata database in the project's PostgreSQL
HISTORY_START = datetime(2023, 11, 1, tzinfo=UTC)
HOUR_START = datetime(2024, 1, 8, 12, tzinfo=UTC)  # the dag.test interval: [12:00, 13:00); real runs follow it
HOUR = timedelta(hours=1)
WEEKLY_RUN_AFTER = datetime(2024, 1, 7, 23, 30, tzinfo=UTC)
AIRFLOW_PORT = int(os.environ.get("CANDLECAST_BENCH_AIRFLOW_PORT", "18280"))
RATIO_TARGET = 1.25
RUN_TARGET_S = 60.0
PARSE_TARGET_S = 1.0
# The steps of the floor the issue defined (before the health step existed): extract, the feature build,
# predict, the accuracy build. The DAG also runs health, so the ratio is taken against all five.
FOUR_STEPS = ("extract", "features", "predict", "accuracy")


def dag_env() -> dict[str, str]:
    """What the DAGs' tasks work on, in both Airflows and the direct runs."""
    return {
        "CANDLECAST_DB_SCHEMA": BASE,
        "CANDLECAST_MODEL_STORE": str(WORK / "models"),
        "CANDLECAST_EXTRACT_PRODUCTS": "BTC-USD",
        "CANDLECAST_DBT_MANIFEST": str(MANIFEST_DIR / "manifest.json"),
        "CANDLECAST_DAG_RETRIES": "0",
    }


def configure() -> None:
    """Pin Airflow's and the DAGs' settings before Airflow is imported (it reads them once)."""
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        del os.environ[key]
    os.environ.update(effective_env())  # the DB credentials, as `candlecast.withenv` would give them
    os.environ.update(airflow_env(LocalAirflow(home=WORK / "airflow", port=AIRFLOW_PORT)))
    os.environ.update(dag_env())


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


# --- the direct floor ----------------------------------------------------------------------------------

def floor_run(interval_start: datetime) -> dict[str, float]:
    """The hour's steps run directly, as ``python -m cycle`` does: seconds per step, and ``total`` (wall)."""
    from cycle.run import run_hourly

    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    run_hourly(interval_start + HOUR, env=os.environ, on_step=lambda o: steps.__setitem__(o.name, o.seconds))
    steps["total"] = time.perf_counter() - t0
    return steps


# --- real runs, by the scheduler of a standalone Airflow ---------------------------------------------------

def boot_airflow() -> tuple[dict[str, str], LocalAirflow, AirflowApi]:
    """``airflow standalone`` started as ``make airflow`` starts it (Connections per role, no password in its
    environment), on the bench base; no runs of its own (only the ones created here)."""
    from candlecast import postgres
    from candlecast.airflow_local import local_airflow, start, stop

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "CANDLECAST_AIRFLOW_HOME": str(WORK / "airflow-real"),
        "CANDLECAST_AIRFLOW_PORT": str(AIRFLOW_PORT),
        "CANDLECAST_AIRFLOW_DB": AIRFLOW_DB,
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    })
    stop(env)  # one a crashed bench left behind
    airflow = local_airflow(env)
    shutil.rmtree(airflow.home, ignore_errors=True)
    if airflow.postgres is not None:  # a metadata database of its own, fresh: never a developer's `make airflow`'s
        postgres.start_server(airflow.postgres)
        postgres.ensure_database(airflow.postgres, AIRFLOW_DB, fresh=True)
    airflow = start(env)
    api = AirflowApi(airflow)
    api.wait_for_dag(DAG_ID, timeout=180)  # the DAG processor's first pass over dags/
    api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    return env, airflow, api


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def real_run(api: AirflowApi, interval_start: datetime) -> tuple[float, list[tuple[str, float, str]]]:
    """One hourly run of ``[interval_start, +1 h)`` by the scheduler (Airflow's backfill of that one interval):
    its start-to-success seconds (the run's own timestamps) and its task instances."""
    backfill = api.call("POST", "/api/v2/backfills", {"dag_id": DAG_ID, "from_date": interval_start.isoformat(),
                                                      "to_date": interval_start.isoformat(), "max_active_runs": 1})
    deadline = time.monotonic() + 600
    run: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        runs = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill")["dag_runs"]
        run = next((r for r in runs if datetime.fromisoformat(r["data_interval_start"]) == interval_start), None)
        if run is not None and run["state"] in ("success", "failed"):
            break
        time.sleep(0.5)
    if run is None or run["state"] != "success":
        raise SystemExit(f"the real run of {interval_start:%Y-%m-%d %H:%M} did not succeed: {run}")
    tis = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    started = sorted((t for t in tis if t["start_date"]), key=lambda t: t["start_date"])
    rows = [(t["task_id"], _seconds(t["start_date"], t["end_date"]), t["state"]) for t in started]
    # The scheduler closes the backfill a loop or two after its run; the next one is refused (409) until then.
    while api.call("GET", f"/api/v2/backfills/{backfill['id']}").get("completed_at") is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the backfill of {interval_start:%Y-%m-%d %H:%M} was not completed: {backfill}")
        time.sleep(0.5)
    return _seconds(run["start_date"], run["end_date"]), rows


def compare_real_and_floor(hours: int) -> tuple[list[dict[str, float]], list[float], list[tuple[str, float, str]],
                                                 tuple[float, float]]:
    """Per hour: the floor, then the real run of the same interval. The first hour of each is a warm-up
    (a fresh Airflow's first run, dbt's first partial parse) and not counted."""
    from candlecast.airflow_local import stop

    env, _, api = boot_airflow()
    floors, reals = [], []
    last_rows: list[tuple[str, float, str]] = []
    load_before = os.getloadavg()[0]
    try:
        for n in range(hours + 1):
            start = HOUR_START + (n + 1) * HOUR
            floor = floor_run(start)
            real, rows = real_run(api, start)
            print(f"  hour {start:%H:%M}: floor {floor['total']:5.1f} s, real run {real:5.1f} s, "
                  f"ratio {real / floor['total']:.2f}, load {os.getloadavg()[0]:.1f}"
                  + (" (warm-up, not counted)" if n == 0 else ""), flush=True)
            if n:
                floors.append(floor)
                reals.append(real)
                last_rows = rows
    finally:
        stop(env)
    return floors, reals, last_rows, (load_before, os.getloadavg()[0])


def main(argv: list[str] | None = None) -> int:
    import logging

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=int, default=3, help="timed real runs (and floors), after one warm-up")
    args = parser.parse_args(argv)
    configure()
    WORK.mkdir(parents=True, exist_ok=True)
    # a fresh metadata DB: a run re-run over an earlier bench's would take the cleared-run path (slower)
    shutil.rmtree(WORK / "airflow", ignore_errors=True)
    dbt_parse()
    fresh_base()

    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.models.pool import Pool
    from airflow.utils import db

    from candlecast.settings.dbt import DbtSettings
    from tools.replay import ReplayServer

    logging.getLogger().setLevel(logging.WARNING)
    db.initdb()
    for pool, description in DbtSettings.from_env(os.environ).pools().items():
        Pool.create_or_update_pool(pool, slots=1, description=description, include_deferred=False)
    cores = os.cpu_count()
    with ReplayServer(rate=None) as server:
        os.environ["COINBASE_API_URL"] = server.url
        seed_history(server.url)
        bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS, bundle_name="dags-folder")
        if bag.import_errors:
            raise SystemExit(f"DAG import errors: {bag.import_errors}")
        weekly_wall, weekly = timed_run(bag.dags["candlecast_weekly_retrain"], WEEKLY_RUN_AFTER)
        hourly_load = os.getloadavg()[0]
        hourly_wall, hourly = timed_run(bag.dags[DAG_ID], HOUR_START + HOUR)
        print(f"\nreal hourly runs by the scheduler, each after the direct floor of the same hour "
              f"({args.hours} timed):", flush=True)
        floors, reals, real_rows, (load_a, load_b) = compare_real_and_floor(args.hours)
    parse = parse_times()

    print(f"\nset-up: weekly retrain run {weekly_wall:.1f} s ("
          + ", ".join(f"{tid} {s:.1f}" for tid, s, _ in weekly) + ")")

    floor_total = statistics.median(f["total"] for f in floors)
    floor_four = statistics.median(sum(f[s] for s in FOUR_STEPS) for f in floors)
    real = statistics.median(reals)
    print("\nthe direct floor (python -m cycle's steps, median per step):")
    for name in (*FOUR_STEPS, "health"):
        print(f"  {name:<55} {statistics.median(f[name] for f in floors):6.1f} s")
    print(f"  {'(all five steps, wall)':<55} {floor_total:6.1f} s")
    print(f"  {'(the four of the issue: no health step)':<55} {floor_four:6.1f} s")
    print("\nthe last real run, by task (Airflow's start and end of each):")
    for task_id, seconds, state in real_rows:
        print(f"  {task_id:<55} {seconds:6.1f} s  {state}")
    ratio = real / floor_total
    paired = statistics.median(r / f["total"] for r, f in zip(reals, floors, strict=True))
    verdict = "meets" if ratio <= RATIO_TARGET else "MISSES"
    print(f"real hourly run (scheduler, start to success): median {real:.1f} s of "
          + ", ".join(f"{r:.1f}" for r in reals)
          + f"; floor {floor_total:.1f} s: ratio {ratio:.2f} (target <= {RATIO_TARGET}: {verdict}; median of the "
          f"hours' own ratios {paired:.2f}); against the issue's four-step floor {floor_four:.1f} s: "
          f"{real / floor_four:.2f}")
    print(f"(load average {load_a:.1f} before the real runs, {load_b:.1f} after, on {cores} cores)")

    print(f"\none hourly run (dag.test, interval {HOUR_START:%Y-%m-%d %H:%M} UTC + 1 h), by task:")
    for task_id, seconds, _ in hourly:
        print(f"  {task_id:<55} {seconds:6.1f} s")
    dbt = sum(s for t, s, _ in hourly if t.startswith(("features.", "accuracy.")))
    n_dbt = sum(1 for t, _, _ in hourly if t.startswith(("features.", "accuracy.")))
    print(f"  {'(dbt group tasks: ' + str(n_dbt) + ', together)':<55} {dbt:6.1f} s")
    verdict = "meets" if hourly_wall <= RUN_TARGET_S else "MISSES"
    print(f"hourly dag.test wall time: {hourly_wall:.1f} s (target <= {RUN_TARGET_S:.0f} s on 2 cores: {verdict}; "
          f"load average {hourly_load:.1f} before it)")
    for name, seconds in parse.items():
        verdict = "meets" if seconds <= PARSE_TARGET_S else "MISSES"
        print(f"parse {name} (DBT_MANIFEST): {seconds:.2f} s (target <= {PARSE_TARGET_S:.0f} s: {verdict})")
    load = os.getloadavg()
    print(f"(load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {cores} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
