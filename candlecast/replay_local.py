"""The replay server (``tools/replay``, dev only) as a background process, for Airflow's offline mode.

``make airflow OFFLINE=1`` serves the bundled candles as the Coinbase API on 127.0.0.1:``CANDLECAST_REPLAY_PORT``
(default 8765) and points the DAGs at it. Started like the project's other servers: a plain process of its own
session, tracked by a pid file (under the Airflow home that uses it, ``replay/``) that names it only while that
pid still runs ``python -m tools.replay --port PORT``; ``start`` and ``stop`` are idempotent.

The plumbing imports no dev tool: the replay server is only ever started as a program, and what it serves
(products and first and last hours) is read from its ``--describe`` answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from candlecast import pidfile
from candlecast.settings import REPO_ROOT

DEFAULT_REPLAY_PORT = 8765
HOST = "127.0.0.1"
MODULE = "tools.replay"


class ReplayLocalError(RuntimeError):
    """The background replay server could not be started, described or stopped."""


@dataclass(frozen=True)
class ReplayData:
    """What the replay server serves: its products and the first and last hour (UTC) it has candles for."""

    products: tuple[str, ...]
    first_hour: datetime
    last_hour: datetime


@dataclass(frozen=True)
class LocalReplay:
    root: Path  # .local/replay
    port: int
    host: str = HOST

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / "replay.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "replay.log"

    @property
    def identity(self) -> pidfile.Identity:
        # Not the port: whatever port it was started on, this pid file's replay server is stopped by it.
        return pidfile.Identity(os.path.realpath(sys.executable), ("-m", MODULE))


def replay_port(env: Mapping[str, str] | None = None) -> int:
    values = os.environ if env is None else env
    raw = values.get("CANDLECAST_REPLAY_PORT", "").strip() or str(DEFAULT_REPLAY_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ReplayLocalError(f"CANDLECAST_REPLAY_PORT={raw!r} is not a port number")
    return int(raw)


def describe() -> ReplayData:
    """The bundled data the replay server serves (``python -m tools.replay --describe``)."""
    proc = subprocess.run([sys.executable, "-m", MODULE, "--describe"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
    try:
        answer = json.loads(proc.stdout)
        series = answer["products"]
        return ReplayData(
            products=tuple(sorted(series)),
            first_hour=min(datetime.fromisoformat(s["first_hour"]) for s in series.values()),
            last_hour=max(datetime.fromisoformat(s["last_hour"]) for s in series.values()),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ReplayLocalError(f"`python -m {MODULE} --describe` gave no description ({exc}): "
                               f"{proc.stderr.strip()[-500:]}") from exc


def running_pid(replay: LocalReplay) -> int | None:
    return pidfile.our_pid(replay.pid_file, replay.identity)


def _answers(replay: LocalReplay) -> bool:
    try:
        with urllib.request.urlopen(f"{replay.url}/_replay/clock", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(replay: LocalReplay, timeout: float = 30.0) -> LocalReplay:
    """Serve the bundled candles in the background unless this replay server already runs."""
    if running_pid(replay) is None:
        pidfile.discard_stale(replay.pid_file, replay.identity)
        replay.root.mkdir(parents=True, exist_ok=True)
        with replay.log_file.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "--port", str(replay.port)], cwd=REPO_ROOT, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        replay.pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    # Ours must answer: another server on the port (a `make replay` in some shell) makes ours exit.
    while running_pid(replay) is None or not _answers(replay):
        if running_pid(replay) is None or time.monotonic() > deadline:
            tail = replay.log_file.read_text(errors="replace")[-800:] if replay.log_file.exists() else ""
            raise ReplayLocalError(f"the replay server on {replay.url} did not start (log {replay.log_file}; is the "
                                   f"port taken? CANDLECAST_REPLAY_PORT picks another):\n{tail}")
        time.sleep(0.2)
    return replay


def stop(replay: LocalReplay, timeout: float = 15.0) -> bool:
    """Stop the background replay server by its pid; False when it was not running."""
    pid = running_pid(replay)
    if pid is None:
        pidfile.discard_stale(replay.pid_file, replay.identity)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(replay) is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    replay.pid_file.unlink(missing_ok=True)
    return True
