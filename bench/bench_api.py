"""Benchmark the read API under load: throughput and p50/p99 latency with 50 concurrent clients for 20 s each.

Three endpoints of the same app, in the same run, one after the other:

- ``/v1/ping``, a constant with no database: the floor of this app on this machine (uvicorn, FastAPI routing,
  HTTP) and the baseline of the targets;
- ``/v1/forecasts/latest``: the newest forecast per product, from the marts;
- ``/v1/products/BTC-USD/forecasts`` over 7 days (168 rows) from the marts;

and then the two data endpoints again with the answer cache off (``CANDLECAST_API_CACHE_SECONDS=0``: every
request reads the database), for information.

Target: each data endpoint ≥ 0.5× the bare endpoint's throughput. The API runs as ``make serve`` runs it
(``python -m serve`` as the reader role, one uvicorn process), the load generator is ``wrk`` (Debian's package,
a C program: a Python client on the same 2 cores would measure itself); both share the machine, so the figures
are of the pair. Set-up (not timed) builds a base of its own, ``bench_api``, as the tests do: the bundled
candles, the feature mart by dbt, a small LightGBM trained and promoted, the hourly step over the last week,
the accuracy marts by dbt. Prints figures and targets; never fails on timing.

    make bench        # or: .venv/bin/python bench/bench_api.py [--duration 20] [--connections 50]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from candlecast.hours import HOUR  # noqa: E402
from candlecast.settings import Schemas, effective_env  # noqa: E402

BASE = "bench_api"
PRODUCT = "BTC-USD"
TARGET_RATIO = 0.5
PORTS = range(8190, 8200)  # this checkout's API ports; the first free one is used


def setup(schemas: Schemas, store_dir: Path) -> str:
    """The marts of ``bench_api``, as the pipeline builds them; returns the 7-day range's query string."""
    from sqlalchemy import text

    from candlecast import mariadb
    from candlecast.db import engine_for
    from candlecast.dbt_runner import run_dbt
    from extract.schema import ensure_raw_tables
    from ml.evaluate import evaluate
    from ml.features import newest_hour
    from ml.lineage import read_lineage
    from ml.predict import forecast_hours
    from ml.promote import promote
    from ml.store import ModelStore
    from ml.train import TrainConfig, train
    from tests.support import bundled_candles, load_raw_candles

    mariadb.provision(schemas)
    loader = engine_for("loader")
    candles = bundled_candles()
    ensure_raw_tables(loader, schemas)
    with loader.begin() as conn:
        conn.execute(text(f"delete from `{schemas.raw}`.candles"))
    load_raw_candles(loader, schemas, candles, PRODUCT)
    loader.dispose()
    work = REPO / ".local" / "bench" / "api-dbt"
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE}
    run_dbt(["run"], env=env, select=["+fct_candle_features"], args=["--quiet"], target_path=work / "target",
            log_path=work / "logs")
    ml = engine_for("ml")
    store = ModelStore(store_dir)
    newest = newest_hour(ml, schemas, PRODUCT)
    small = TrainConfig(num_boost_round=60, early_stopping_rounds=10, num_leaves=15)
    lineage = read_lineage(work / "target" / "manifest.json")  # of the dbt run that built the features
    train(ml, schemas, store, PRODUCT, newest - 168 * HOUR, small, lineage=lineage)
    promote(ml, schemas, evaluate(ml, schemas, store, PRODUCT, newest, lineage=lineage))
    week_start = newest + HOUR - timedelta(days=7)
    forecast_hours(ml, schemas, store, PRODUCT, week_start, newest + HOUR, lineage=lineage)
    ml.dispose()
    run_dbt(["run"], env=env, select=["tag:accuracy"], args=["--quiet"], target_path=work / "target",
            log_path=work / "logs")
    start, end = week_start + HOUR, newest + 2 * HOUR
    return f"start={start:%Y-%m-%dT%H:%M}Z&end={end:%Y-%m-%dT%H:%M}Z&limit=168"


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def start_api(port: int, cache_seconds: str | None = None) -> subprocess.Popen[bytes]:
    """``python -m serve`` as the reader role (its password only), on ``port``, until it answers."""
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": BASE, "CANDLECAST_API_PORT": str(port)}
    if cache_seconds is not None:
        env["CANDLECAST_API_CACHE_SECONDS"] = cache_seconds
    proc = subprocess.Popen(
        [sys.executable, "-m", "candlecast.withenv", "reader", sys.executable, "-m", "serve"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                               if proc.stderr else "the API exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the API did not listen on 127.0.0.1:{port} within 30 s")


@dataclass(frozen=True)
class Load:
    name: str
    path: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx/3xx answers and socket errors


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(name: str, url: str, path: str, duration_s: int, connections: int) -> Load:
    # Accept-Encoding as every HTTP client sends it (curl --compressed, browsers, httpx): long answers go gzipped.
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "--latency",
                          "-H", "Accept-Encoding: gzip", url + path],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad += sum(int(n) for n in errors.groups()) if errors else 0
    return Load(name, path, rps, p50, p99, total, bad)


def run_endpoints(endpoints: list[tuple[str, str]], cache_seconds: str | None, duration_s: int,
                  connections: int) -> list[Load]:
    """One API process (the default cache, or ``cache_seconds``) loaded by wrk, one endpoint after the other."""
    port = free_port()
    api = start_api(port, cache_seconds)
    url = f"http://127.0.0.1:{port}"
    try:
        for _, path in endpoints:  # warm the pool and the code paths
            subprocess.run(["wrk", "-t1", "-c4", "-d1s", url + path], capture_output=True, check=True)
        return [wrk(name, url, path, duration_s, connections) for name, path in endpoints]
    finally:
        api.terminate()
        api.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per endpoint (20)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent clients (50)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if shutil.which("wrk") is None:
        print("wrk is not installed: `make deps` installs it (apt-get install wrk)", file=sys.stderr)
        return 1
    os.environ.update(effective_env())
    os.environ["CANDLECAST_DB_SCHEMA"] = BASE
    schemas = Schemas(BASE)
    store = Path(tempfile.mkdtemp(prefix="bench-api-models-"))
    print("set-up (not timed): bundled candles, feature mart, a model, the last week served, accuracy marts ...",
          flush=True)
    try:
        week = setup(schemas, store)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    endpoints = [("bare constant", "/v1/ping"), ("latest forecasts", "/v1/forecasts/latest"),
                 ("7-day forecast range", f"/v1/products/{PRODUCT}/forecasts?{week}")]
    with open("/proc/loadavg") as fh:
        load_before = " ".join(fh.read().split()[:3])
    results = run_endpoints(endpoints, None, args.duration, args.connections)
    # The same data endpoints with the answer cache off: every request reads the database (informational).
    uncached = run_endpoints(endpoints[1:], "0", args.duration, args.connections)
    with open("/proc/loadavg") as fh:
        load_after = " ".join(fh.read().split()[:3])
    cores = os.cpu_count()
    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "unknown CPU")
    print(f"machine: {cpu}, {cores} cores, Python {sys.version.split()[0]}; load average before {load_before}, "
          f"after {load_after}; wrk -t2 -c{args.connections} -d{args.duration}s per endpoint, API and wrk on the "
          "same machine")
    bare = results[0].requests_per_s
    print(f"  {'endpoint':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>7}  vs bare")
    for r in results:
        ratio = r.requests_per_s / bare if bare else 0.0
        print(f"  {r.name:<30} {r.requests_per_s:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.requests:>9} "
              f"{r.bad:>7}  {ratio:.2f}×")
    for r in uncached:
        ratio = r.requests_per_s / bare if bare else 0.0
        print(f"  {r.name + ', no cache':<30} {r.requests_per_s:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
              f"{r.requests:>9} {r.bad:>7}  {ratio:.2f}×")
    for r in results[1:]:
        ratio = r.requests_per_s / bare if bare else 0.0
        verdict = "meets" if ratio >= TARGET_RATIO and r.bad == 0 else "MISSES"
        print(f"{r.name}: {r.requests_per_s:.0f} req/s = {ratio:.2f}× the bare endpoint's {bare:.0f} req/s; "
              f"target ≥ {TARGET_RATIO}× with no errors ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
