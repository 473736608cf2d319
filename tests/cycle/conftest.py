"""Cycle tests: the command (``python -m cycle``) as cron would run it, in subprocesses, against the tests'
MariaDB (base ``ct_cycle``), real dbt and the replay server over HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tools.replay import ReplayServer

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = "ct_cycle"
STORE = REPO_ROOT / ".local" / "test" / "cycle-models"
# 68 days of history: enough for the 168 h feature windows, a 4-week validation split and a 1-week holdout.
HISTORY_START = datetime(2023, 11, 1, tzinfo=UTC)
FIRST_HOUR = datetime(2024, 1, 8, 12, tzinfo=UTC)  # the first hour the cycle itself fetches


def run_cycle(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m cycle ARGS`` in a fresh interpreter, from the repository root, as a crontab line runs it."""
    return subprocess.run([sys.executable, "-m", "cycle", *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="package")
def replay() -> Iterator[ReplayServer]:
    """The replay server (its clock and faults, for the tests that schedule an outage)."""
    from tools.replay import ReplayServer

    with ReplayServer(rate=None) as server:
        yield server


@pytest.fixture(scope="package")
def replay_url(replay: ReplayServer) -> str:
    return replay.url


@pytest.fixture(scope="package")
def cycle_env(admin_engine, provision_schemas, replay_url: str) -> dict[str, str]:
    """An empty base holding the history before FIRST_HOUR (set-up through the extractor, not under test),
    and the environment a cron job would have: the connection (the tests' credentials), products, API, store."""
    from tests.support import backfill_history

    provision_schemas(BASE, fresh=True)
    shutil.rmtree(STORE, ignore_errors=True)
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE, "CANDLECAST_MODEL_STORE": str(STORE),
           "CANDLECAST_EXTRACT_PRODUCTS": "BTC-USD", "COINBASE_API_URL": replay_url,
           "PYTHONPATH": str(REPO_ROOT)}
    backfill_history(env, HISTORY_START, FIRST_HOUR)
    return env
