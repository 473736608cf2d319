"""Against a running Airflow: ``airflow standalone`` started the way ``make airflow`` starts it, on a free port, with
its metadata in the tests' PostgreSQL (a fresh database each session).

The REST API lists the Cosmos-rendered dbt tasks, and the standard CLI, with the scheduler running, has it run one
interval for a given logical date (``airflow backfill create`` from and to that date: ``airflow dags trigger`` would
give the run the interval of the wall clock), the one after the interval ``test_dag_runs`` ran: it succeeds on the
LocalExecutor and stores exactly what a direct run of that hour does; a model's task cleared afterwards (as a retry
runs it again) builds that model and its tests itself. ``test_the_airflow_cli`` drives the same instance with more of
the CLI.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from datetime import datetime
from typing import Any

import pytest

from candlecast.airflow_api import AirflowApi
from candlecast.airflow_local import LocalAirflow, airflow_env, local_airflow, start, stop
from candlecast.hours import HOUR
from tests.dags import pipeline
from tests.dags.conftest import BASE, DIRECT_BASE, HOURLY_START, TEST_LOCAL_DIR, TEST_PG
from tests.support import ProcessWatch

pytestmark = pytest.mark.integration

DAG_ID = "candlecast_hourly"
REBUILT = "features.features_latest_model_build"  # a view: cheap to rebuild, and the rebuild changes no row
API_DATABASE = "airflow_api"


def _free_port() -> int:
    """A port whose next two (the log servers' ports) are free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        try:
            for p in (port + 1, port + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port for the test Airflow")


def _wait_for_run(api: AirflowApi, run_id: str, state: str, airflow: LocalAirflow) -> None:
    state = api.wait_for_run(DAG_ID, run_id, timeout=420, state=state)
    if state != "success":
        tis = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        bad = sorted(f"{t['task_id']}={t['state']}" for t in tis if t["state"] != "success")
        pytest.fail(f"backfill run {run_id} ended {state}; not successful: {bad}; task logs under {airflow.logs_dir}")


class _Boot:
    def __init__(self, env: dict[str, str]) -> None:
        import threading

        self.env = env
        self.airflow: LocalAirflow | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="airflow-boot", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.airflow = start(self.env)
        except BaseException as exc:
            self.error = exc


def _boot() -> _Boot:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "CANDLECAST_AIRFLOW_HOME": str(TEST_LOCAL_DIR / "airflow-api"),
        "CANDLECAST_AIRFLOW_PORT": str(_free_port()),
        # Its metadata: a database of its own on the tests' PostgreSQL, next to the in-process Airflow's.
        "CANDLECAST_PG_PORT": str(TEST_PG.port),
        "CANDLECAST_AIRFLOW_DB": API_DATABASE,
        # The scheduler must not start runs of its own next to the one the test triggers: with this off it
        # creates no scheduled runs, and still runs triggered ones (the DAG itself is unchanged).
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    })
    airflow = local_airflow(env)
    assert airflow.postgres == TEST_PG
    stop(env)  # a server a crashed session left behind
    shutil.rmtree(airflow.home, ignore_errors=True)
    from candlecast import postgres

    postgres.start_server(TEST_PG)
    postgres.ensure_database(TEST_PG, API_DATABASE, fresh=True)  # every session starts from an empty Airflow
    return _Boot(env)


def airflow_cli(airflow: LocalAirflow, *args: str, timeout: float = 180) -> str:
    """``airflow ARGS`` (the venv's console script, as a user types it) against ``airflow``, with the environment
    ``python -m candlecast.airflow_local env`` prints and no role's password; its standard output."""
    import subprocess
    import sys
    from pathlib import Path

    from candlecast.role_env import role_env

    env = {k: v for k, v in role_env(None, os.environ).items() if not k.startswith("AIRFLOW")}
    env.update(airflow_env(airflow, env))
    proc = subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"`airflow {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_api_lists_the_cosmos_tasks_and_an_interval_run_with_the_cli_equals_a_direct_run(
        hourly_run, dagbag, admin_engine, direct_run, api_airflow) -> None:
    from sqlalchemy import text

    direct_run.release_next_hour.set()  # the reference for this interval, in the background meanwhile
    api = AirflowApi(api_airflow)
    api.wait_for_dag(DAG_ID, timeout=180)  # the DAG processor's first pass over dags/

    task_ids = {t["task_id"] for t in api.get(f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}
    others = {"product_batches", "extract", "predict", "health", "all_steps_ok"}
    expected_dbt = {t.task_id for t in dagbag.dags[DAG_ID].tasks} - others
    assert expected_dbt and {t.split(".")[0] for t in expected_dbt} == {"features", "accuracy"}
    assert task_ids == expected_dbt | others

    # The interval after the one test_dag_runs ran, [13:00, 14:00), run for its logical date with the standard
    # CLI while the scheduler runs: a backfill from and to that date (bounds are logical dates, both included,
    # and this DAG's logical date is its interval's start). The scheduler runs no task of a paused DAG.
    airflow_cli(api_airflow, "dags", "unpause", DAG_ID)
    interval_start = HOURLY_START + HOUR
    airflow_cli(api_airflow, "backfill", "create", "--dag-id", DAG_ID, "--from-date", interval_start.isoformat(),
                "--to-date", interval_start.isoformat(), "--max-active-runs", "1")
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() < deadline:
        runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill")["dag_runs"]
        if not runs:
            time.sleep(1)
    assert len(runs) == 1, f"the backfill created {len(runs)} runs, expected one"
    run = runs[0]
    run_id = run["dag_run_id"]
    assert datetime.fromisoformat(run["data_interval_start"]) == interval_start
    assert datetime.fromisoformat(run["data_interval_end"]) == HOURLY_START + 2 * HOUR

    from candlecast.airflow_local import running_pid
    from candlecast.settings import ROLES

    passwords: dict[str, str] = {role: os.environ[f"CANDLECAST_{role.upper()}_PASSWORD"] for role in ROLES}
    # Airflow's own metadata login: in the PostgreSQL server's 0600 password file only, never in a process's
    # environment or command line (the URL names the file), nor in any log.
    passwords["airflow_metadata"] = TEST_PG.passfile.read_text().strip().rsplit(":", 1)[1]
    standalone = running_pid(api_airflow)
    assert standalone is not None
    watch = ProcessWatch(standalone, passwords)
    try:
        _wait_for_run(api, run_id, run["state"], api_airflow)
        # Each group's build reported every model's result (from dbt's run_results.json) and each model's task
        # judged its model from that on its first try, building nothing itself.
        models = sorted(t for t in expected_dbt if t.endswith("_model_build"))
        for group in ("features", "accuracy"):
            report = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{group}.dbt_producer_watcher"
                             "/xcomEntries/build_report?deserialize=true&stringify=false")["value"]
            assert {uid.removeprefix("model.candlecast.") for uid in report} == \
                {t.split(".")[1].removesuffix("_model_build") for t in models if t.startswith(group)}
            assert {r["status"] for r in report.values()} == {"success"}
        for task_id in models:
            first = next(api_airflow.logs_dir.glob(f"dag_id={DAG_ID}/run_id={run_id}/task_id={task_id}/attempt=1.log"))
            assert "building dbt model" not in first.read_text(), f"{task_id} built its model instead of judging"
        # A model's task cleared (what a retry does too) builds its model and the model's tests itself, holding the
        # transformer's password only (the watch goes on): the group's one `dbt build` is not run again.
        cleared = api.post(f"/api/v2/dags/{DAG_ID}/clearTaskInstances", {
            "dry_run": False, "dag_run_id": run_id, "task_ids": [REBUILT], "only_failed": False,
            "include_upstream": False, "include_downstream": False, "reset_dag_runs": True,
        })
        assert [t["task_id"] for t in cleared["task_instances"]] == [REBUILT]
        time.sleep(2)
        _wait_for_run(api, run_id, "queued", api_airflow)
    finally:
        seen = watch.stop()
    rebuilt = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{REBUILT}")
    assert rebuilt["state"] == "success" and rebuilt["try_number"] == 2
    log = next(api_airflow.logs_dir.glob(f"dag_id={DAG_ID}/run_id={run_id}/task_id={REBUILT}/attempt=2.log"))
    assert "building dbt model features_latest and its tests in this task" in log.read_text()

    # One secret per process: Airflow and its task processes hold no role's password in their environment (a
    # task reads its step's role from its Connection), nor the metadata database's; the step process a Python
    # task starts holds its role's only (extract the loader's, predict the ml role's), each dbt process Cosmos
    # starts the transformer's only.
    # No password on any command line, nor in any log of the run.
    dbt_pids = {pid for pid, _, cmd, _, _ in seen if "/dbt " in cmd or cmd.startswith("dbt ")}
    assert dbt_pids, f"no dbt process seen among {sorted({cmd for _, _, cmd, _, _ in seen})}"
    grown = True
    while grown:  # what dbt starts (it runs lsb_release, say) inherits its environment: part of dbt
        before = len(dbt_pids)
        dbt_pids |= {pid for pid, parent, _, _, _ in seen if parent in dbt_pids}
        grown = len(dbt_pids) > before
    # A child sampled between fork and exec still shows its parent's command line and environment (Cosmos's task
    # process forking dbt, with no password): that is the parent's image, not yet dbt, and is judged as the parent.
    commands: dict[int, set[str]] = {}
    for pid, _, cmd, _, _ in seen:
        commands.setdefault(pid, set()).add(cmd)
    dbt = {(cmd, env) for pid, parent, cmd, env, _ in seen
           if pid in dbt_pids and cmd not in commands.get(parent, set())}
    assert all(env == {"transformer"} for _, env in dbt), dbt
    step_processes = {(cmd.split("cycle.run_step ")[1].split()[0], env) for _, _, cmd, env, _ in seen
                      if "cycle.run_step " in cmd}
    assert step_processes == {("extract", frozenset({"loader"})), ("predict", frozenset({"ml"})),
                              ("health", frozenset({"transformer"}))}, step_processes
    running_tasks = {cmd for _, _, cmd, _, _ in seen if "LocalExecutor: " in cmd and "<idle>" not in cmd}
    assert running_tasks, "no task process seen while the run went on"
    holding = {cmd: env for pid, _, cmd, env, _ in seen
               if env and pid not in dbt_pids and "cycle.run_step " not in cmd}
    assert holding == {}, f"processes holding role passwords in their environment: {holding}"
    assert [cmd for _, _, cmd, _, argv in seen if argv] == []
    leaked = [str(path) for path in api_airflow.home.rglob("*") if path.is_file() and path.suffix in (".log", ".json")
              and any(pw.encode() in path.read_bytes() for pw in passwords.values())]
    assert leaked == [], f"passwords in {leaked}"

    direct_run.wait("next_hourly")
    dag_tables = pipeline.snapshot(admin_engine, BASE)
    assert pipeline.differences(dag_tables, pipeline.snapshot(admin_engine, DIRECT_BASE)) == []
    with admin_engine.connect() as conn:
        realized = conn.execute(text(f"select count(*) from `{BASE}_marts`.fct_prediction_accuracy "
                                     "where target_hour = :t and role = 'production' and is_realized = 1"),
                                {"t": HOURLY_START + HOUR}).scalar()
    # The forecast the first run made for 13:00 now meets the candle this run fetched.
    assert realized == 1
