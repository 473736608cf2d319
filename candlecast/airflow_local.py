"""The project's local Airflow: ``airflow standalone`` run as a background process, like ``candlecast.mariadb``.

Its metadata database is the database ``CANDLECAST_AIRFLOW_DB`` (default ``airflow``) in the project's own
PostgreSQL (``candlecast.postgres``, started here when it is not running), reached as the ``airflow`` role with
the password in that server's 0600 password file, named in the URL: the URL holds no secret, so neither Airflow's
environment, its command lines nor ``airflow config`` show one. ``CANDLECAST_AIRFLOW_METADATA=sqlite`` opts into
SQLite instead (one writer at a time: the CLI meets "database is locked" while the scheduler runs).

Everything else Airflow keeps lives under ``$CANDLECAST_AIRFLOW_HOME`` (default ``.local/airflow``):
``airflow.cfg`` (with the secrets Airflow generates on first start), task logs, the Cosmos cache, the generated
admin password, and this launcher's pid and log files. The API server and UI listen on 127.0.0.1 only, on
``CANDLECAST_AIRFLOW_PORT`` (default 8080).

Offline (``start --offline``, ``make airflow OFFLINE=1``) it also starts the replay server (``candlecast.replay_local``)
and points the DAGs at it: ``COINBASE_API_URL`` is the replay's, the products are the replay's, both DAGs' start
and end dates are the replay's first and last hour, and both DAGs are paused; so unpausing schedules no hour the
replay does not have, and ``backfill`` (``make airflow-backfill``) runs the hours asked for.

``CANDLECAST_AIRFLOW_EXECUTOR=celery`` (``make airflow EXECUTOR=celery WORKERS=2``) runs the CeleryExecutor
instead: ``candlecast.airflow_celery`` in standalone's place (the same four components, and the Celery workers,
each with a local folder of its own), the project's Redis (``candlecast.redis_local``, started here) as the broker.

The DB credentials reach the tasks as one Airflow Connection per role (``candlecast_loader``,
``candlecast_transformer``, ``candlecast_ml``, ``candlecast_reader``; never the admin), imported into
Airflow's metadata database before it starts, from the env vars over the local credentials file. Airflow itself
is started with no role's password in its environment (and no credentials file to fall back on), so a task
holds only the login of the Connection its step asks for, and dbt under Cosmos only the transformer's
(rendered from that Connection into dbt's environment when the task runs).

    python -m candlecast.airflow_local start [--offline]|stop|status|env
    python -m candlecast.airflow_local backfill --from HOUR --to HOUR [--dag DAG_ID]
    python -m candlecast.airflow_local clean [--keep-days 30]      # from cron: history and task logs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from candlecast import pidfile, postgres, redis_local, replay_local
from candlecast.airflow_celery import celery_env
from candlecast.hours import cli_time, to_utc
from candlecast.postgres import LocalPostgres, PostgresError
from candlecast.redis_local import LocalRedis, RedisError
from candlecast.replay_local import LocalReplay, ReplayLocalError, replay_port
from candlecast.role_env import role_env
from candlecast.settings import REPO_ROOT, DbtSettings, LocalServices, Role, SettingsError, db_settings, effective_env
from candlecast.settings.dags import HOURLY_DAG_ID, RETRAIN_DAG_ID
from candlecast.settings.local import DEFAULT_AIRFLOW_DB

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# The default (32) pre-forks 32 LocalExecutor workers, about 5.5 GB RSS; 2 cores gain nothing past 4.
PARALLELISM = 4


class AirflowLocalError(RuntimeError):
    """The local Airflow could not be started or stopped."""


@dataclass(frozen=True)
class LocalAirflow:
    home: Path
    port: int
    host: str = HOST
    # Where the metadata lives: a database of the project's PostgreSQL, or SQLite in ``home`` when None.
    postgres: LocalPostgres | None = None
    database: str = DEFAULT_AIRFLOW_DB
    # The LocalExecutor under `airflow standalone`, or the CeleryExecutor under candlecast.airflow_celery, with
    # the project's Redis as its broker.
    executor: str = "local"
    redis: LocalRedis | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def sql_alchemy_conn(self) -> str:
        if self.postgres is None:
            return f"sqlite:///{self.home}/airflow.db"
        return self.postgres.url(self.database)

    def replay(self, env: Mapping[str, str] | None = None) -> LocalReplay:
        """Offline mode's replay server: its pid file and log under this home, on ``CANDLECAST_REPLAY_PORT``."""
        return LocalReplay(root=self.home / "replay", port=replay_port(env))

    @property
    def mode_file(self) -> Path:
        """``online`` or ``offline``: what the running instance was started as."""
        return self.home / "mode"

    @property
    def pid_file(self) -> Path:
        return self.home / "standalone.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "standalone.log"

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def log_server_ports(self) -> tuple[int, int]:
        # The worker and triggerer log servers default to 8793/8794 whatever the API port is, so two
        # instances (developer's and tests') would clash; derive them from the API port instead.
        return self.port + 1, self.port + 2


def local_airflow(env: Mapping[str, str] | None = None) -> LocalAirflow:
    local = LocalServices.from_env(env)
    pg = None if local.airflow_metadata == "sqlite" else LocalPostgres(local.postgres_dir.resolve(), local.pg_port)
    redis = LocalRedis(local.redis_dir.resolve(), local.redis_port) if local.airflow_executor == "celery" else None
    return LocalAirflow(home=local.airflow_home.resolve(), port=local.airflow_port, postgres=pg,
                        database=local.airflow_db, executor=local.airflow_executor, redis=redis)


# candlecast.airflow_executor.NAME, without importing Airflow here
PRELOADING_LOCAL_EXECUTOR = "candlecast.airflow_executor.PreloadingLocalExecutor"


def airflow_env(airflow: LocalAirflow, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``AIRFLOW__*`` settings of the local Airflow (also used by the DAG tests and the benchmark).

    Where the instance lives and listens is fixed by ``airflow``; the tuning knobs are defaults that an
    ``AIRFLOW__...`` variable already in ``env`` overrides.
    """
    env = os.environ if env is None else env
    venv_bin = str(Path(sys.executable).parent)
    tunable = {
        # The LocalExecutor, its workers forked with the DAGs' libraries already imported (candlecast.airflow_executor).
        "AIRFLOW__CORE__EXECUTOR": PRELOADING_LOCAL_EXECUTOR,
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # The scheduler notices a finished task on its next loop; idle loops sleep 1 s by default, which added
        # about a second per step of the hourly chain (measured by bench/bench_dags.py). An idle loop is a few
        # small queries, so a shorter sleep costs little CPU.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        # A worker's task supervisor waits for its task process in a select() of at most this many seconds; when
        # the task closes its sockets before it has exited (often, here), the supervisor only notices the exit
        # when that select times out, and the worker stays busy: 5 s (the default) after about half the tasks of
        # the hourly run, stalling the tasks queued behind (bench/bench_dags.py). One heartbeat call a second per
        # running task is the price.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        # Cosmos's watcher build would rewrite an Airflow Variable holding all its results at every result it
        # reports (for retrying the build, which the DAGs never do: each model's task retries its model).
        "AIRFLOW__COSMOS__ENABLE_WATCHER_RELIABLE_RETRY": "False",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }
    result = {key: env.get(key, default) for key, default in tunable.items()}
    result.update(
        {
            "AIRFLOW_HOME": str(airflow.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow.sql_alchemy_conn,
            "AIRFLOW__API__HOST": airflow.host,
            "AIRFLOW__API__PORT": str(airflow.port),
            # Tasks reach the execution API through this URL: it must match the port, or every task fails.
            "AIRFLOW__API__BASE_URL": airflow.url,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow.logs_dir),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(airflow.log_server_ports[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(airflow.log_server_ports[1]),
            "AIRFLOW__COSMOS__CACHE_DIR": str(airflow.home / "cosmos"),
            # standalone starts its components as `airflow ...`: the project's venv must come first.
            "PATH": venv_bin + os.pathsep + env.get("PATH", os.defpath),
        }
    )
    if airflow.postgres is not None:
        # Airflow derives an asyncpg URL otherwise; psycopg serves both, and reads the same password file.
        result["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = airflow.postgres.url(airflow.database, "psycopg_async")
    return result


# What the process ``start`` launches looks like: standalone, or the Celery launcher in its place (which runs the
# same components and the workers); a pid file naming anything else is stale.
STANDALONE = pidfile.Identity(os.path.realpath(sys.executable), ("-m", "airflow", "standalone"))
CELERY_LAUNCHER = pidfile.Identity(os.path.realpath(sys.executable), ("-m", "candlecast.airflow_celery"))
LAUNCHERS = (STANDALONE, CELERY_LAUNCHER)


def launcher_argv(airflow: LocalAirflow) -> list[str]:
    module = "candlecast.airflow_celery" if airflow.executor == "celery" else "airflow"
    return [sys.executable, "-m", module, *(["standalone"] if module == "airflow" else [])]


# The Connections ``start`` creates are ``{prefix}_{role}``; the DAGs read them when this is set in their env.
DEFAULT_CONN_PREFIX = "candlecast"
CONNECTION_ROLES: tuple[Role, ...] = ("loader", "transformer", "ml", "reader")  # never the admin (set-up)


def role_connections(values: Mapping[str, str], prefix: str) -> dict[str, dict[str, object]]:
    """One Airflow Connection per role, in the format ``airflow connections import`` reads."""
    out: dict[str, dict[str, object]] = {}
    for role in CONNECTION_ROLES:
        try:
            login = db_settings(role, values)
        except SettingsError as exc:
            raise AirflowLocalError(f"cannot write the Airflow Connection of the {role} role: {exc}") from exc
        out[f"{prefix}_{role}"] = {
            "conn_type": "mysql", "description": f"candlecast: the {role} role", "host": login.host,
            "port": login.port, "schema": login.schemas.base, "login": login.user, "password": login.password,
        }
    return out


def _airflow_cli(env: Mapping[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "airflow", *args], cwd=REPO_ROOT, env=dict(env),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AirflowLocalError(f"`airflow {' '.join(args[:2])}` failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def install_connections(airflow: LocalAirflow, values: Mapping[str, str], child_env: Mapping[str, str],
                        prefix: str) -> None:
    """Migrate the metadata DB and (re)write the role Connections, before the scheduler starts.

    The passwords go through a 0600 file that is removed at once, never through a command line.
    """
    import json
    import tempfile

    _airflow_cli(child_env, "db", "migrate")
    fd, path = tempfile.mkstemp(prefix=".connections-", suffix=".json", dir=airflow.home)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(role_connections(values, prefix), fh)
        _airflow_cli(child_env, "connections", "import", "--overwrite", path)
    finally:
        os.unlink(path)


def running_pid(airflow: LocalAirflow) -> int | None:
    """The launcher's pid (standalone, or the Celery launcher: whichever ``start`` ran) while it runs."""
    for identity in LAUNCHERS:
        pid = pidfile.our_pid(airflow.pid_file, identity)
        if pid is not None:
            return pid
    return None


def _discard_stale(airflow: LocalAirflow) -> str | None:
    """Remove the pid file unless it names one of our launchers (a recycled pid is never signalled)."""
    if running_pid(airflow) is not None:
        return None
    return pidfile.discard_stale(airflow.pid_file, STANDALONE)


def health(airflow: LocalAirflow, timeout: float = 2.0) -> dict[str, object] | None:
    """The API server's ``/api/v2/monitor/health`` answer, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{airflow.url}/api/v2/monitor/health", timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def is_healthy(answer: Mapping[str, object] | None) -> bool:
    if not answer:
        return False
    components = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    parts = [answer.get(c) for c in components]
    return all(isinstance(part, dict) and part.get("status") == "healthy" for part in parts)


def _log_tail(airflow: LocalAirflow, lines: int = 30) -> str:
    try:
        return "\n".join(airflow.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _detach() -> None:
    """In the child before exec: a session (and process group) of its own, so stop() can reach every
    component; and SIGINT handled again, since a background job of a non-interactive shell (CI) inherits it
    ignored, and SIGINT is what makes standalone shut its components down in order."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def offline_env(airflow: LocalAirflow, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Start the replay server (idempotent) and return what points the DAGs at it, bounded to its data."""
    replay = replay_local.start(airflow.replay(env))
    data = replay_local.describe()
    return {
        "COINBASE_API_URL": replay.url,
        "CANDLECAST_EXTRACT_PRODUCTS": ",".join(data.products),
        "CANDLECAST_DAG_START_DATE": data.first_hour.isoformat(),
        # By interval start: the last interval [last hour, +1 h) is the last one whose candle the replay has.
        "CANDLECAST_DAG_END_DATE": data.last_hour.isoformat(),
        "CANDLECAST_DAG_CATCHUP": "false",
    }


def _mode(offline: bool) -> str:
    return "offline" if offline else "online"


def start(env: Mapping[str, str] | None = None, timeout: float = 300.0, offline: bool = False) -> LocalAirflow:
    """Start ``airflow standalone`` in the background (idempotent) and wait until every component is healthy.

    ``offline``: the replay server too, with the DAGs pointed at it, bounded to its data and paused.
    """
    values = effective_env(env)
    airflow = local_airflow(values)
    pid = running_pid(airflow)
    if pid is not None and airflow.mode_file.exists() and airflow.mode_file.read_text().strip() != _mode(offline):
        raise AirflowLocalError(
            f"Airflow already runs {airflow.mode_file.read_text().strip()} (pid {pid}); stop it first "
            f"(`make airflow-stop`) to start it {_mode(offline)}")
    if airflow.postgres is not None:  # idempotent: a running server only gets its role and database re-applied
        postgres.start_server(airflow.postgres, databases=(airflow.database,))
    if pid is not None and offline:
        replay_local.start(airflow.replay(values))  # the running instance's replay server, back if it died
    if pid is None:
        _discard_stale(airflow)
        airflow.home.mkdir(parents=True, exist_ok=True)
        prefix = values.get("CANDLECAST_AIRFLOW_CONN_PREFIX", "").strip() or DEFAULT_CONN_PREFIX
        # No role's password in Airflow's own environment: each task gets its role's from its Connection.
        child_env = {**role_env(None, values), **airflow_env(airflow, values), "CANDLECAST_AIRFLOW_CONN_PREFIX": prefix}
        if offline:
            child_env.update(offline_env(airflow, values))
        if airflow.redis is not None:  # the CeleryExecutor: its broker first (idempotent)
            redis_local.start_server(airflow.redis)
            child_env = celery_env(child_env, airflow.redis.broker_url_command())
        install_connections(airflow, values, child_env, prefix)
        if offline:
            pause_dags(child_env)
        airflow.mode_file.write_text(_mode(offline) + "\n")
        with airflow.log_file.open("ab") as log_fh:
            proc = subprocess.Popen(
                launcher_argv(airflow),
                cwd=REPO_ROOT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                preexec_fn=_detach,
            )
        pid = proc.pid
        airflow.pid_file.write_text(f"{pid}\n")
        log.info("started %s (pid %s), log %s", " ".join(launcher_argv(airflow)[1:]), pid, airflow.log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(airflow) is None:
            raise AirflowLocalError(f"Airflow ({' '.join(launcher_argv(airflow)[2:])}) exited during start-up; "
                                    f"last lines of {airflow.log_file}:\n"
                                    f"{_log_tail(airflow)}")
        if is_healthy(health(airflow)):
            ensure_pool(airflow, role_env(None, values))
            return airflow
        time.sleep(1.0)
    raise AirflowLocalError(f"Airflow at {airflow.url} not healthy after {timeout:.0f} s; see {airflow.log_file}:\n"
                            f"{_log_tail(airflow)}")


def pause_dags(child_env: Mapping[str, str]) -> None:
    """Both DAGs written to the metadata DB now (parsed the way the DAG processor will) and paused, so that
    nothing is scheduled until asked for, whatever an earlier online run left unpaused."""
    _airflow_cli(child_env, "dags", "reserialize")
    for dag_id in (HOURLY_DAG_ID, RETRAIN_DAG_ID):
        _airflow_cli(child_env, "dags", "pause", dag_id)


def backfill(date_from: datetime, date_to: datetime, dag_id: str = HOURLY_DAG_ID,
             reprocess: str = "failed", env: Mapping[str, str] | None = None) -> str:
    """Have the running Airflow run every interval of ``dag_id`` whose start is in ``[date_from, date_to]``.

    ``airflow backfill create`` itself (the scheduler runs the runs, one at a time), after unpausing the DAG: the
    scheduler schedules no task of a paused DAG, a backfill's included. Returns the CLI's output.
    """
    values = effective_env(env)
    airflow = local_airflow(values)
    if running_pid(airflow) is None:
        raise AirflowLocalError(f"no local Airflow runs (pid file {airflow.pid_file}): `make airflow` first")
    if airflow.mode_file.exists() and airflow.mode_file.read_text().strip() == "offline":
        data = replay_local.describe()
        if to_utc(date_from) < data.first_hour or to_utc(date_to) > data.last_hour:
            raise AirflowLocalError(
                f"offline, the replay server has the hours {data.first_hour:%Y-%m-%dT%H:%M} to "
                f"{data.last_hour:%Y-%m-%dT%H:%M} UTC only; backfill within them")
    cli_env = {**role_env(None, values), **airflow_env(airflow, values)}
    _airflow_cli(cli_env, "dags", "unpause", dag_id)
    return _airflow_cli(cli_env, "backfill", "create", "--dag-id", dag_id,
                        "--from-date", to_utc(date_from).isoformat(), "--to-date", to_utc(date_to).isoformat(),
                        "--max-active-runs", "1", "--reprocess-behavior", reprocess)


def ensure_pool(airflow: LocalAirflow, env: Mapping[str, str]) -> None:
    """Create (or keep) the one-slot pools the DAGs need (``DbtSettings.pools``); idempotent."""
    for pool, description in DbtSettings.from_env(env).pools().items():
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "pools", "set", pool, "1", description],
            cwd=REPO_ROOT, env={**env, **airflow_env(airflow, env)}, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise AirflowLocalError(f"could not create the Airflow pool {pool!r}: {proc.stderr.strip()[-500:]}")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def stop(env: Mapping[str, str] | None = None, timeout: float = 60.0) -> bool:
    """Stop what ``start`` started, by its pid (and its process group). Returns False if it was not running."""
    airflow = local_airflow(env)
    replay_local.stop(airflow.replay(env))  # offline mode's replay server, if it runs
    pid = running_pid(airflow)
    if pid is None:
        _discard_stale(airflow)  # a recycled pid is never signalled
        return False
    # standalone stops its components in order on SIGINT; whatever outlives it in its process group (a task
    # process, a slow API server) is terminated, then killed.
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    for sig in (signal.SIGTERM, signal.SIGKILL):
        while time.monotonic() < deadline and _group_members(pid):
            time.sleep(0.5)
        if not _group_members(pid):
            break
        log.warning("Airflow processes %s still running; sending %s", _group_members(pid), sig.name)
        _signal_group(pid, sig)
        deadline = time.monotonic() + 10
    airflow.pid_file.unlink(missing_ok=True)
    airflow.mode_file.unlink(missing_ok=True)
    return True


def prune_logs(logs_dir: Path, before: datetime) -> int:
    """Delete the task log files last written before ``before`` and the folders that leaves empty; returns how
    many files went. Airflow never removes a task log itself: at one file per task and try, an hourly DAG of 16
    tasks leaves about 11,000 a month."""
    cutoff = before.timestamp()
    removed = 0
    if not logs_dir.is_dir():
        return 0
    for path in sorted(logs_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink() or path.is_file():
            if path.lstat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


def clean(before: datetime, env: Mapping[str, str] | None = None) -> str:
    """Keep Airflow's history from growing without end: ``airflow db clean`` of the metadata older than ``before``
    (runs, task instances, XComs, logs of the log table; Airflow keeps each DAG's latest run), then the task log
    files older than it. For cron or an operator; no task can run it (tasks have no metadata database access)."""
    values = effective_env(env)
    airflow = local_airflow(values)
    cli_env = {**role_env(None, values), **airflow_env(airflow, values)}
    _airflow_cli(cli_env, "db", "clean", "--clean-before-timestamp", before.isoformat(), "--skip-archive", "--yes")
    removed = prune_logs(airflow.logs_dir, before)
    return (f"Airflow metadata before {before:%Y-%m-%d %H:%M} UTC cleaned; {removed} task log files removed "
            f"from {airflow.logs_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m candlecast.airflow_local", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env", "backfill", "clean"])
    parser.add_argument("--offline", action="store_true",
                        help="start: the replay server too, the DAGs pointed at it, bounded to its data and paused")
    hour = cli_time()
    parser.add_argument("--from", dest="date_from", type=hour, help="backfill: the first interval's start")
    parser.add_argument("--to", dest="date_to", type=hour, help="backfill: the last interval's start")
    parser.add_argument("--dag", default=HOURLY_DAG_ID, choices=[HOURLY_DAG_ID, RETRAIN_DAG_ID])
    parser.add_argument("--reprocess", default="failed", choices=["none", "failed", "completed"],
                        help="backfill: intervals that already have a run: re-run the failed ones (default), none "
                             "or all of them")
    parser.add_argument("--keep-days", type=int, default=30,
                        help="clean: the days of runs and task logs to keep (default 30)")
    args = parser.parse_args(argv)
    if args.keep_days < 1:
        parser.error("--keep-days must be a whole number of days >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        airflow = local_airflow()
        if args.command == "start":
            start(offline=args.offline)
            print(f"Airflow is up: {airflow.url}  (user admin; password in {airflow.password_file})")
            print(f"metadata: {airflow.sql_alchemy_conn}")
            if args.offline:
                print(f"offline: the DAGs read the replay server ({airflow.replay().url}) and are paused; "
                      "run hours with `make airflow-backfill FROM=... TO=...`")
            print(f"standalone log: {airflow.log_file}; task logs: {airflow.logs_dir}; stop with `make airflow-stop`")
        elif args.command == "backfill":
            if args.date_from is None or args.date_to is None:
                parser.error("backfill needs --from and --to (interval starts, both included)")
            print(backfill(args.date_from, args.date_to, args.dag, args.reprocess).strip())
        elif args.command == "clean":
            print(clean(datetime.now(UTC) - timedelta(days=args.keep_days)))
        elif args.command == "stop":
            print("Airflow stopped" if stop() else "Airflow was not running")
        elif args.command == "status":
            pid = running_pid(airflow)
            stale = None if pid else _discard_stale(airflow)
            answer = health(airflow)
            state = "healthy" if is_healthy(answer) else ("starting or unhealthy" if pid else "not running")
            print(f"Airflow {state}: {airflow.url} (pid {pid or '-'})" + (f"; {stale}" if stale else ""))
            return 0 if pid else 1
        else:
            # For `eval "$(python -m candlecast.airflow_local env)"`: then `airflow ...` reaches this instance.
            for key, value in sorted(airflow_env(airflow).items()):
                print(f"export {key}={shlex.quote(value)}")
    except (AirflowLocalError, SettingsError, PostgresError, RedisError, ReplayLocalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
