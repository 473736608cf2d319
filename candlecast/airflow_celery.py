"""Airflow on the CeleryExecutor on this machine: what ``airflow standalone`` does for the LocalExecutor (which it
forces), done for Celery. One foreground process starts the scheduler, the DAG processor, the triggerer, the API
server and N Celery workers, passes SIGINT/SIGTERM on to them, and stops them all when one exits; ``make airflow
EXECUTOR=celery WORKERS=2`` (``candlecast.airflow_local``) runs it in the background in place of standalone.

Each worker has a local folder of its own (``CANDLECAST_LOCAL_DIR=<local dir>/workers/worker-N``: its model cache,
its scratch), its own log server port, its own queues (``CANDLECAST_WORKER_QUEUES``: one comma-separated list per
worker, the lists separated by spaces, e.g. ``"retrain hourly"``; a worker without one takes Airflow's ``default``
queue), and its name as the hostname Airflow records on each task instance it runs (``worker_hostname``), so what
ran where can be read back. The broker is the project's Redis (``candlecast.redis_local``), whose URL Airflow reads
from a 0600 file (``AIRFLOW__CELERY__BROKER_URL_CMD``); the result backend is Airflow's default, its metadata
database.

    python -m candlecast.airflow_celery        # in the foreground, with the environment airflow_local gives it
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_NAME_VAR = "CANDLECAST_WORKER_NAME"
# Airflow's own components, each a process of its own (standalone runs the same four).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler",),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer",),
    "api-server": ("api-server",),
}
DEFAULT_QUEUE = "default"


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` here: a worker's name (and its tasks'), else the machine's."""
    return os.environ.get(WORKER_NAME_VAR) or socket.getfqdn()


@dataclass(frozen=True)
class Worker:
    name: str  # worker-1, worker-2, ...
    queues: tuple[str, ...]
    local_dir: Path
    log_server_port: int

    def argv(self) -> list[str]:
        # Celery's node name must differ per worker on one host, or the second one's control commands collide.
        return ["celery", "worker", "--queues", ",".join(self.queues), "--celery-hostname", f"{self.name}@%h"]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        return {**base, "CANDLECAST_LOCAL_DIR": str(self.local_dir), WORKER_NAME_VAR: self.name,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_server_port)}


def parse_queues(spec: str, count: int) -> list[tuple[str, ...]]:
    """``"retrain hourly"`` -> one queue list per worker; workers beyond the lists take the default queue."""
    lists = [tuple(q.strip() for q in item.split(",") if q.strip()) for item in spec.split()]
    if len(lists) > count:
        raise ValueError(f"CANDLECAST_WORKER_QUEUES names {len(lists)} workers' queues ({spec!r}), "
                         f"but there are {count} workers")
    return [lists[i] if i < len(lists) and lists[i] else (DEFAULT_QUEUE,) for i in range(count)]


def plan_workers(count: int, queues_spec: str, local_dir: Path, first_log_port: int) -> list[Worker]:
    """The workers to start: names, queues, local folders under ``local_dir/workers``, log server ports."""
    if count < 1:
        raise ValueError(f"the CeleryExecutor needs at least one worker, got {count}")
    queues = parse_queues(queues_spec, count)
    return [Worker(f"worker-{i + 1}", queues[i], local_dir / "workers" / f"worker-{i + 1}", first_log_port + i)
            for i in range(count)]


def celery_env(base: Mapping[str, str], broker_url_command: str) -> dict[str, str]:
    """What turns a LocalExecutor environment (``airflow_local.airflow_env``) into the CeleryExecutor's."""
    return {
        **base,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL_CMD": broker_url_command,
        # Two slots per worker: the machine has two cores and Airflow, dbt and MariaDB beside the tasks.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": base.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "2"),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "candlecast.airflow_celery.worker_hostname",
    }


def run(env: Mapping[str, str], workers: Sequence[Worker], stop_timeout: float = 60.0) -> int:
    """Start every component and worker, wait; returns 0 after SIGINT/SIGTERM, 1 when one of them exited."""
    for worker in workers:
        worker.local_dir.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    requested: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    argv0 = [sys.executable, "-m", "airflow"]
    for name, args in COMPONENTS.items():
        processes[name] = subprocess.Popen([*argv0, *args], env=dict(env), stdin=subprocess.DEVNULL)
    for worker in workers:
        processes[worker.name] = subprocess.Popen([*argv0, *worker.argv()], env=worker.env(env),
                                                  stdin=subprocess.DEVNULL)
    log.info("started %s", ", ".join(f"{name} (pid {proc.pid})" for name, proc in processes.items()))
    exited: str | None = None
    while not requested and exited is None:
        exited = next((name for name, proc in processes.items() if proc.poll() is not None), None)
        time.sleep(0.5)
    if exited is not None:
        log.error("%s exited with code %s: stopping the others", exited, processes[exited].returncode)
    # Workers first (a warm shutdown lets running tasks finish), then the rest.
    for _name, proc in sorted(processes.items(), key=lambda item: not item[0].startswith("worker-")):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout
    for name, proc in processes.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %s) still running after %.0f s: killing it", name, proc.pid, stop_timeout)
            proc.kill()
            proc.wait()
    return 0 if exited is None else 1


def main() -> int:
    from candlecast.settings import LocalServices

    logging.basicConfig(level=logging.INFO, format="%(asctime)s candlecast.airflow_celery: %(message)s")
    local = LocalServices.from_env()
    try:
        workers = plan_workers(local.airflow_workers, os.environ.get("CANDLECAST_WORKER_QUEUES", ""),
                               local.local_dir.resolve(), local.airflow_port + 3)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(os.environ, workers)


if __name__ == "__main__":
    sys.exit(main())
