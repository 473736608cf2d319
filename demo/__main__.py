"""`make demo` = ``python -m demo``: every step in order, each one's summary printed, then where to look.

Each step is one or more functions of this package calling the library of the stage it exercises. Every
function runs in a process of its own that holds only its database role's password (``candlecast.role_env``):
the extract as ``loader``, dbt as ``transformer``, the ML steps as ``ml``, what a SQL consumer would read as
``reader``, the DAG parse as nobody. This process only starts them in order (reading the credentials file to
hand each its role's password) and prints their summaries; ``python -m demo --part MODULE:FUNCTION`` is one
of them.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys

from candlecast.settings import Role

# (title, [(role, "module:function"), ...]): the parts of a step run in order, their outputs printed together.
STEPS: list[tuple[str, list[tuple[Role | None, str]]]] = [
    ("extract: backfill the bundled candles over HTTP from the replay server",
     [("loader", "demo.extract_step:backfill_bundled_sample")]),
    # --- dbt feature layer (features_step.py) ---
    ("dbt: build the feature layer (models + tests), source freshness, newest rows",
     [("transformer", "demo.features_step:build_features_step"),
      ("reader", "demo.features_step:describe_features_step")]),
    # --- ml (ml_steps.py): needs the feature mart built by the dbt step before it ---
    ("ml: train LightGBM and the naive baselines (holdout: the newest 168 h)", [("ml", "demo.ml_steps:train_step")]),
    ("ml: score every stored model on the holdout and promote the lowest MAE",
     [("ml", "demo.ml_steps:promote_step")]),
    ("ml: predictions for the last 48 hours with the production model", [("ml", "demo.ml_steps:predict_step")]),
    ("dbt: accuracy marts, then the leaderboard",
     [("transformer", "demo.ml_steps:build_accuracy_step"), ("reader", "demo.ml_steps:describe_leaderboard_step")]),
    ("ml: walk-forward backtest and its chart", [("ml", "demo.ml_steps:backtest_step")]),
    # --- orchestration (dags_step.py) ---
    ("airflow: the DAGs as Airflow parses them (Cosmos renders the dbt models as tasks)",
     [(None, "demo.dags_step:describe_dags_step")]),
    # --- serving (serve_step.py): last, so it ends by saying how to open the dashboard ---
    ("serve: the health mart, then the read API and dashboard over the marts (reader role)",
     [("transformer", "demo.serve_step:build_health_step"), ("reader", "demo.serve_step:serve_step")]),
]


def run_part(role: Role | None, target: str) -> subprocess.CompletedProcess[str]:
    """``python -m demo --part TARGET`` with ``role``'s password only; its summary on stdout, errors on stderr."""
    from candlecast.role_env import role_env

    return subprocess.run([sys.executable, "-m", "demo", "--part", target], env=role_env(role),
                          stdout=subprocess.PIPE, text=True, check=False)


def part(target: str) -> int:
    """One part, in this process: print its summary; on failure, the error on stderr and exit 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    module, _, function = target.partition(":")
    if not module.startswith("demo.") or not function:
        print(f"error: --part wants demo.MODULE:FUNCTION, got {target!r}", file=sys.stderr)
        return 2
    try:
        print(getattr(importlib.import_module(module), function)(), flush=True)
    except Exception as exc:  # the demo's job is to say clearly which step failed and why
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--part"] and len(argv) == 2:
        return part(argv[1])
    for title, parts in STEPS:
        print(f"\n== {title}", flush=True)
        for role, target in parts:
            try:
                done = run_part(role, target)
            except KeyError as exc:  # the role's password is set nowhere
                print(f"error in step '{title}': {exc.args[0]}", file=sys.stderr)
                return 1
            print(done.stdout.rstrip("\n"), flush=True)
            if done.returncode != 0:
                print(f"error in step '{title}' ({target}, as {role or 'no role'}): see above", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
