"""Benchmark the replayed fortnight (issue 10): forecast availability and the hourly cycle's wall time.

Targets: forecast availability >= 99% (hours with a production-model forecast / hours whose just-closed candle
the API served at cycle time); the cycle's wall time within 1.2x of a fault-free cycle, measured in the same
run: the p95 of every cycle, retries included, against the median of the cycles no fault touched; and, because
a VM's own speed drifts over the fortnight by as much as a fault costs, each fault-touched cycle's slowest attempt
against the fault-free cycles within 12 hours of it (defined before the run that measures it, session 18).
Prints figures, targets and the machine's load; never fails on timing (it exits 1 only if a soak check fails).

Runs ``tools.soak`` with its own private MariaDB (``.local/bench/soak``, port ``CANDLECAST_BENCH_SOAK_DB_PORT``,
default 3411): 336 cycles as processes (``python -m cycle --end HOUR``, as cron starts them), 24 of them
through Airflow (``dag.test()``), then the heal, the re-run of the fortnight and a full refresh. 80 to 100
minutes on a quiet 2-core machine (cycles of 12-16 s), more on a loaded one (each dbt start-up stretches).
``CANDLECAST_SOAK_DAYS=N`` replays the last N days instead (the same faults, the last day through Airflow);
``CANDLECAST_SOAK_PLAN=short`` runs the ten-hour plan of ``make test`` (a few minutes).

    .venv/bin/python bench/bench_soak.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.soak.harness import CycleRun, SoakConfig  # noqa: E402
from tools.soak.plan import SoakPlan  # noqa: E402
from tools.soak.run import NEIGHBOUR_HOURS, print_verdicts, run_soak  # noqa: E402

AVAILABILITY_TARGET = 0.99
CYCLE_RATIO_TARGET = 1.2


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> int:
    short = os.environ.get("CANDLECAST_SOAK_PLAN", "fortnight") == "short"
    plan = SoakPlan.short() if short else SoakPlan.days(int(os.environ.get("CANDLECAST_SOAK_DAYS", "14")))
    config = SoakConfig(work_dir=REPO / ".local" / "bench" / "soak",
                        db_port=int(os.environ.get("CANDLECAST_BENCH_SOAK_DB_PORT", "3411")),
                        base="bench_soak", mode="process")
    print(f"machine: {os.cpu_count()} cores; load before: {uptime()}", flush=True)
    started = time.perf_counter()
    done = [0]

    def progress(cycle: CycleRun) -> None:
        done[0] += 1
        if cycle.fault or cycle.via == "airflow" or len(cycle.attempts) > 1 or done[0] % 24 == 0:
            print(f"  {cycle.line()}", flush=True)

    findings = run_soak(plan, config, on_cycle=progress)
    total = time.perf_counter() - started
    t = findings.timing()
    a = findings.availability
    airflow = findings.cycle_seconds("airflow")
    print(f"\nsoak: {plan.hours} hourly cycles {plan.start:%Y-%m-%d %H:%M}..{plan.end(plan.hours - 1):%Y-%m-%d %H:%M} "
          f"UTC in {total / 60:.1f} min (set-up {findings.setup_seconds:.0f} s, heal, re-run, full refresh included)")
    print(f"forecast availability: {a.ratio:.2%} ({a.forecast}/{a.served} hours the API served at cycle time)"
          f"   target >= {AVAILABILITY_TARGET:.0%}")
    print(f"outcomes per hour: {findings.outcome_counts}")
    print(f"cycle wall time (process cycles, retries included): median {t['median_s']:.2f} s, p95 {t['p95_s']:.2f} s; "
          f"fault-free median {t['fault_free_median_s']:.2f} s -> p95 {t['p95_ratio']:.2f}x, median "
          f"{t['median_ratio']:.2f}x   target <= {CYCLE_RATIO_TARGET}x")
    worst = findings.fault_cycle_ratios()
    print(f"fault cycles against the fault-free cycles within {NEIGHBOUR_HOURS} h of each (slowest attempt): worst "
          f"{t['fault_cycle_worst_ratio']:.2f}x   target <= {CYCLE_RATIO_TARGET}x; "
          + ", ".join(f"cycle {k} {r:.2f}x" for k, r in sorted(worst.items())))
    if airflow:
        airflow.sort()
        median = airflow[len(airflow) // 2]
        print(f"through Airflow (dag.test): {len(airflow)} consecutive hours, median {median:.1f} s per hour")
    print(f"machine load after: {uptime()}")
    return 0 if print_verdicts(findings) else 1


if __name__ == "__main__":
    sys.exit(main())
