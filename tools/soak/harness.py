"""Run a soak: hourly cycles over replayed time, with the plan's faults, against a MariaDB of the soak's own.

The soak owns everything it touches: a private MariaDB (its own data directory and port, so it can be
restarted and killed without disturbing anyone), one database base, a model store and an in-process replay
server whose clock it moves. Each cycle is the project's hourly cycle (``cycle``): as a process, the way cron
starts ``python -m cycle --end HOUR`` (always so for the cycle that is killed), in-process through the same
library function (``inline``, faster, for the short soak), or through Airflow (``dag.test()`` of the hourly
DAG; see ``airflow``). A failed cycle is run once more ``retry_after`` later, as a scheduler's retry would.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from candlecast.settings import REPO_ROOT, Schemas, credentials_file, read_env_file
from tools.replay import ReplayServer, bundled_series
from tools.soak.plan import PRODUCT, SoakPlan

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

Mode = Literal["process", "inline"]

# The extractor's retries, short: an outage costs a cycle about a second instead of a minute (the behaviour,
# retry then fail then heal later, is the same).
FAST_EXTRACT = {
    "CANDLECAST_EXTRACT_MAX_ATTEMPTS": "3",
    "CANDLECAST_EXTRACT_BACKOFF_INITIAL": "0.2",
    "CANDLECAST_EXTRACT_BACKOFF_MAX": "1",
    "CANDLECAST_EXTRACT_TIMEOUT": "5",
}


class SoakError(RuntimeError):
    """The soak could not be set up or run (not a finding about the system under test)."""


@dataclass(frozen=True)
class Attempt:
    clock: datetime
    seconds: float
    # "ok", "failed", "killed", or "unhealthy": every step did its work and only the health check failed (a
    # verdict on the hour, e.g. a model losing to persistence that week: not retried, the cycle counts as run)
    status: str
    detail: str = ""


DONE = ("ok", "unhealthy")  # attempt statuses of a cycle whose steps all did their work


def only_health_failed(failed_steps: set[str]) -> bool:
    from cycle.steps import HEALTH_STEP

    return failed_steps == {HEALTH_STEP}


def failed_steps_in(output: str) -> set[str]:
    """The steps ``python -m cycle`` printed as failed (its step lines: ``NAME  ok|failed  SECONDS s  ...``)."""
    return {line.split()[0] for line in output.splitlines() if len(line.split()) > 1 and line.split()[1] == "failed"}


@dataclass
class CycleRun:
    k: int
    end: datetime
    via: str  # "process", "inline" or "airflow"
    fault: str | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].status in DONE

    @property
    def seconds(self) -> float:
        return sum(a.seconds for a in self.attempts)

    def line(self) -> str:
        tries = " then ".join(f"{a.status} {a.seconds:.1f}s" + (f" ({a.detail})" if a.detail and a.status != "ok"
                                                                 else "") for a in self.attempts)
        return f"cycle {self.k:>3} --end {self.end:%Y-%m-%d %H:%M} [{self.via}] {self.fault or '-'}: {tries}"


@dataclass(frozen=True)
class SoakConfig:
    work_dir: Path  # the private MariaDB's data, model store, cycle logs
    db_port: int
    base: str = "soak"
    mode: Mode = "process"


class Soak:
    """One soak: ``setup()``, ``run()``, then the checks (``tools.soak.checks``) read its state."""

    def __init__(self, plan: SoakPlan, config: SoakConfig, on_cycle: Callable[[CycleRun], None] | None = None) -> None:
        self.plan, self.config = plan, config
        self.schemas = Schemas(config.base)
        self.on_cycle = on_cycle
        self.server = ReplayServer({PRODUCT: bundled_series()})
        self.cycles: list[CycleRun] = []
        self.kill_landed = False
        self.airflow_dag: object | None = None  # the hourly DAG, once Airflow is prepared (``tools.soak.airflow``)
        self._admin: Engine | None = None
        self.env: dict[str, str] = {}

    # --- set-up ----------------------------------------------------------------------------------------

    @property
    def db_env(self) -> dict[str, str]:
        return {"CANDLECAST_LOCAL_DIR": str(self.config.work_dir), "CANDLECAST_DB_PORT": str(self.config.db_port)}

    def start_database(self) -> None:
        from candlecast import mariadb

        mariadb.start(env=self.db_env)

    def stop_database(self) -> None:
        from candlecast import mariadb

        if self._admin is not None:
            self._admin.dispose()
        mariadb.stop(env=self.db_env)

    def restart_database(self) -> None:
        """A clean restart between two cycles (the server goes away, its clients' connections with it)."""
        self.stop_database()
        self.start_database()

    @property
    def admin(self) -> Engine:
        from candlecast.db import make_engine
        from candlecast.settings import db_settings

        if self._admin is None:
            self._admin = make_engine(db_settings("admin", self.env))
        return self._admin

    def setup(self) -> None:
        """A fresh base on the private MariaDB, the replay server at the soak's start, the history before the
        soak stored through the extractor, and a production model trained and promoted on it."""
        from candlecast import mariadb
        from cycle.run import run_weekly

        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        self.start_database()
        self.server.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLECAST_", "AIRFLOW"))}
        env.update(self.db_env)
        env.update(read_env_file(credentials_file(env)))
        env.update(FAST_EXTRACT)
        env.update({
            "CANDLECAST_DB_SCHEMA": self.config.base,
            "COINBASE_API_URL": self.server.url,
            "CANDLECAST_EXTRACT_PRODUCTS": PRODUCT,
            "CANDLECAST_MODEL_STORE": str(self.config.work_dir / "models"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
            "PYTHONPATH": str(REPO_ROOT),
        })
        self.env = env
        # Set-up drops the base (the admin role may only drop what it was granted).
        mariadb.provision(self.schemas, env=self.db_env, fresh=True)
        shutil.rmtree(self.config.work_dir / "models", ignore_errors=True)
        shutil.rmtree(self.config.work_dir / "cycle", ignore_errors=True)

        self.server.set_clock(self.plan.clock(-1))  # the soak's first hour is still open
        self._backfill_history()
        run_weekly(self.plan.start, env=self.env)
        self.plan.arm(self.server)

    def _backfill_history(self) -> None:
        from candlecast.db import make_engine
        from candlecast.settings import ExtractSettings, db_settings
        from extract.pipeline import backfill

        engine = make_engine(db_settings("loader", self.env))
        try:
            backfill(PRODUCT, self.plan.history_start, self.plan.start, engine=engine, schemas=self.schemas,
                     settings=ExtractSettings.from_env(self.env), now=self.plan.start)
        finally:
            engine.dispose()

    def close(self) -> None:
        self.server.stop()
        if self._admin is not None:
            self._admin.dispose()

    # --- the cycles --------------------------------------------------------------------------------------

    def run(self) -> list[CycleRun]:
        """Every cycle of the plan, in order, each at its clock time, with the plan's faults."""
        for k in range(self.plan.hours):
            if k == self.plan.restart_before:
                self.restart_database()
            if self.plan.through_airflow(k):
                from tools.soak.airflow import run_through_airflow

                cycle = run_through_airflow(self, k)
            else:
                cycle = self.run_cycle(k, kill=k == self.plan.killed_at)
            self.cycles.append(cycle)
            if self.on_cycle:
                self.on_cycle(cycle)
        return self.cycles

    def run_cycle(self, k: int, kill: bool = False, rerun: bool = False) -> CycleRun:
        """Cycle ``k`` at its clock time (``rerun``: at the final clock, as a later re-run would), retried once."""
        via = "process" if kill else self.config.mode
        cycle = CycleRun(k, self.plan.end(k), via, None if rerun else self.plan.fault_of(k))
        for attempt in range(2):
            clock = self.plan.final_clock if rerun else self.plan.clock(k, attempt)
            self.server.set_clock(clock)
            if via == "process":
                result = self._run_process(k, clock, kill=kill and attempt == 0)
            else:
                result = self._run_inline(k, clock)
            cycle.attempts.append(result)
            if result.status in DONE:
                break
        return cycle

    def _run_inline(self, k: int, clock: datetime) -> Attempt:
        from cycle.run import CycleError, StepFailed, run_hourly

        started = time.perf_counter()
        try:
            run_hourly(self.plan.end(k), env=self.env, lock_timeout_s=60)
        except CycleError as exc:
            failed = {o.name for o in exc.outcomes if not o.ok} if isinstance(exc, StepFailed) else set()
            status = "unhealthy" if only_health_failed(failed) else "failed"
            return Attempt(clock, time.perf_counter() - started, status, str(exc).splitlines()[0])
        return Attempt(clock, time.perf_counter() - started, "ok")

    def _run_process(self, k: int, clock: datetime, kill: bool) -> Attempt:
        logs = self.config.work_dir / "cycle-logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"{self.plan.end(k):%Y%m%dT%H}.log"
        command = [sys.executable, "-m", "cycle", "--end", self.plan.end(k).isoformat()]
        started = time.perf_counter()
        with open(log_file, "a") as out:
            out.write(f"=== clock {clock:%Y-%m-%d %H:%M} UTC\n")
            out.flush()
            proc = subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            with self._killer(proc, armed=kill) as killed:
                code = proc.wait()
        seconds = time.perf_counter() - started
        if killed.is_set():
            self.kill_landed = True
            return Attempt(clock, seconds, "killed", "SIGKILL during its dbt step")
        if code != 0:
            attempt = log_file.read_text().split("=== clock ")[-1]
            tail = [line for line in attempt.splitlines() if line.startswith("error:")]
            status = "unhealthy" if only_health_failed(failed_steps_in(attempt)) else "failed"
            return Attempt(clock, seconds, status, tail[-1] if tail else f"exit {code}")
        return Attempt(clock, seconds, "ok")

    @contextmanager
    def _killer(self, proc: subprocess.Popen[bytes], armed: bool) -> Iterator[threading.Event]:
        """When armed, SIGKILL the cycle and everything it started as soon as dbt runs a statement that
        builds a model (the transformer role is dbt's alone), so the kill lands inside the dbt step."""
        killed = threading.Event()
        if not armed:
            yield killed
            return
        stop = threading.Event()

        def watch() -> None:
            import pymysql

            from candlecast.settings import db_settings

            admin, transformer = db_settings("admin", self.env), db_settings("transformer", self.env).user
            conn = pymysql.connect(host=admin.host, port=admin.port, user=admin.user, password=admin.password)
            try:
                with conn.cursor() as cur:
                    while not stop.is_set() and proc.poll() is None:
                        # dbt prefixes every statement with a /* {...} */ comment: match anywhere in it.
                        cur.execute(
                            "select count(*) from information_schema.processlist where user = %s and "
                            "(info like '%%create %%' or info like '%%insert %%' or info like '%%delete %%')",
                            (transformer,),
                        )
                        if cur.fetchone()[0]:
                            _kill_tree(proc.pid)
                            killed.set()
                            return
                        time.sleep(0.01)
            finally:
                conn.close()

        thread = threading.Thread(target=watch, name="soak-killer", daemon=True)
        thread.start()
        try:
            yield killed
        finally:
            stop.set()
            thread.join()

    # --- after the fortnight -------------------------------------------------------------------------------

    def heal(self, ks: list[int]) -> float:
        """Re-run the given cycles' hours now that the data is back (the operator's documented way to replace
        labelled fallbacks with forecasts); returns seconds."""
        return self.rerun(ks)

    def rerun_all(self) -> float:
        """Every hour of the soak once more, at the final clock; returns seconds."""
        return self.rerun(list(range(self.plan.hours)))

    def rerun(self, ks: list[int]) -> float:
        """The hours of cycles ``ks`` once more, at the final clock, through the cycle's own steps: each hour's
        extract, one build of the features (the raw data no longer changes, so one incremental build gives
        what one per hour would), each hour's forecast, one build of the accuracy marts."""
        from dataclasses import replace

        from cycle.context import Interval, RunContext
        from cycle.steps import HOURLY_STEPS, dbt_manifest

        if not ks:
            return 0.0
        steps = {step.name: step for step in HOURLY_STEPS}
        # its features step is the cycle's dbt: the forecasts read the feature lineage from the manifest it writes
        ctx = replace(RunContext.resolve(self.env), dbt_manifest=dbt_manifest(self.env))
        intervals = [Interval.hour_ending(self.plan.end(k)) for k in sorted(ks)]
        self.server.set_clock(self.plan.final_clock)
        started = time.perf_counter()
        for interval in intervals:
            steps["extract"].run(ctx, interval)
        steps["features"].run(ctx, intervals[-1])
        for interval in intervals:
            steps["predict"].run(ctx, interval)
        steps["accuracy"].run(ctx, intervals[-1])
        return time.perf_counter() - started


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
        victims = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
