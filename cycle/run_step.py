"""``python -m cycle.run_step NAME ...``: one Python step of the cycle, in the process the launcher
(``cycle.step_process.run_in_own_process``) started with only the step's role's password.

Its one line on standard output is the answer: ``{"summary": ...}`` or ``{"error": {"type", "message"}}``;
everything else (logs, anything a library prints) goes to standard error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

MODULE = "cycle.run_step"


def _parser() -> argparse.ArgumentParser:
    from candlecast.hours import cli_time
    from candlecast.inputs import product_id_arg

    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="Run one Python step of the cycle (the cycle starts this).")
    parser.add_argument("name")
    parser.add_argument("--start", type=cli_time(), required=True)
    parser.add_argument("--end", type=cli_time(), required=True)
    parser.add_argument("--product", action="append", dest="products", type=product_id_arg, required=True)
    parser.add_argument("--model-store", type=Path, required=True)
    parser.add_argument("--failed", action="append", default=[])
    parser.add_argument("--dbt-manifest", type=Path)
    parser.add_argument("--inherit-fd", type=int, action="append", default=[], dest="inherit_fds")
    parser.add_argument("--log-level", default="WARNING")
    return parser


def main(argv: list[str] | None = None) -> int:
    # The answer is the only thing on standard output: anything a library prints goes to standard error.
    answer_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cycle.context import Interval, RunContext
    from cycle.steps import json_safe, step

    try:
        chosen = step(args.name)
        ctx = replace(RunContext.resolve(products=args.products, model_store=args.model_store),
                      failed_steps=tuple(args.failed), dbt_manifest=args.dbt_manifest,
                      inherit_fds=tuple(args.inherit_fds))
        answer: dict[str, Any] = {"summary": json_safe(chosen.run(ctx, Interval.of(args.start, args.end)))}
        status = 0
    except Exception as exc:  # handed to the launcher, which reports it as the step's failure
        logging.getLogger(MODULE).info("step %s failed", args.name, exc_info=True)
        answer = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        status = 1
    answer_out.write(json.dumps(answer) + "\n")
    answer_out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
