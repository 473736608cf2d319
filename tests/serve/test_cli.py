"""``python -m serve`` as `make serve` runs it: a process holding the reader's password only."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.serve.conftest import REPO_ROOT, ServedData
from tests.support import free_port

pytestmark = pytest.mark.integration


def test_make_serves_command_serves_the_marts_as_the_reader_with_no_other_password(served_data: ServedData) -> None:
    port = free_port()
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": served_data.schemas.base, "CANDLECAST_API_PORT": str(port)}
    command = [sys.executable, "-m", "candlecast.withenv", "reader", sys.executable, "-m", "serve"]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline, answer = time.monotonic() + 30, None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/forecasts/latest", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
        assert answer is not None and answer.status_code == 200, proc.poll()
        assert answer.json()["forecasts"][0]["product_id"] == "BTC-USD"
        with open(f"/proc/{proc.pid}/environ", "rb") as fh:
            held = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
        passwords = sorted(k.decode() for k in held if k.decode().endswith("_PASSWORD"))
        assert passwords == ["CANDLECAST_READER_PASSWORD"]
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in output
    secrets = [value for key, value in os.environ.items() if key.endswith("_PASSWORD") and value]
    assert secrets and not [s for s in secrets if s in output]


def test_without_the_readers_password_it_exits_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    env["CANDLECAST_CREDENTIALS_FILE"] = os.devnull
    done = subprocess.run([sys.executable, "-m", "serve"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: CANDLECAST_READER_PASSWORD is not set")
