"""``python -m tools.soak``: run a soak and print each cycle as it ends, then the findings.

Exit 0 when every check holds, 1 otherwise. The assertions proper live in ``tests/soak`` (``make soak``);
this is for watching one run (and what ``bench/bench_soak.py`` builds on).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from candlecast.settings import REPO_ROOT
from tools.soak.harness import CycleRun, Mode, SoakConfig
from tools.soak.plan import SoakPlan
from tools.soak.run import print_verdicts, run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="short", help="short, fortnight, or a number of days (default short)")
    parser.add_argument("--mode", choices=["inline", "process"], default=None,
                        help="how cycles run (default: inline for short, process for the fortnight)")
    parser.add_argument("--port", type=int, default=3410, help="the soak's private MariaDB port (default 3410)")
    parser.add_argument("--work-dir", type=Path, default=None, help="default .local/soak-PLAN")
    parser.add_argument("--no-rerun", action="store_true", help="skip re-running the whole soak")
    parser.add_argument("--airflow", type=int, default=None, metavar="N",
                        help="run the last N hours through Airflow (the fortnight: 24 from cycle 300)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = (SoakPlan.short() if args.plan == "short" else SoakPlan.fortnight() if args.plan == "fortnight"
            else SoakPlan.days(int(args.plan)))
    if args.airflow is not None:
        plan = replace(plan, airflow_from=plan.hours - args.airflow if args.airflow else None,
                       airflow_hours=args.airflow)
    mode: Mode = args.mode or ("inline" if args.plan == "short" else "process")
    config = SoakConfig(work_dir=args.work_dir or REPO_ROOT / ".local" / f"soak-{args.plan}", db_port=args.port,
                        base="soak", mode=mode)

    def show(cycle: CycleRun) -> None:
        print(cycle.line(), flush=True)

    findings = run_soak(plan, config, on_cycle=show, rerun=not args.no_rerun)
    print(f"set-up {findings.setup_seconds:.0f} s; re-ran the hours of cycles {findings.healed} (labelled "
          f"fallbacks) in {findings.heal_seconds:.0f} s")
    timing = findings.timing()
    print("cycle wall time: median {median_s:.2f} s, p95 {p95_s:.2f} s; fault-free median {fault_free_median_s:.2f} s "
          "(median {median_ratio:.2f}x, p95 {p95_ratio:.2f}x)".format(**timing))
    return 0 if print_verdicts(findings) else 1


if __name__ == "__main__":
    sys.exit(main())
