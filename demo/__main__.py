"""`make demo` = ``python -m demo``: every step in order, each one's summary printed, then where to look.

Each step is a function of this package calling the library of the stage it exercises; this module only
runs them in order and prints their one-paragraph summaries.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def _steps() -> list[tuple[str, Callable[[], str]]]:
    from demo import ml_steps
    from demo.dags_step import describe_dags_step
    from demo.extract_step import backfill_bundled_sample
    from demo.features_step import build_features_step
    from demo.serve_step import serve_step

    return [
        ("extract: backfill the bundled candles over HTTP from the replay server", backfill_bundled_sample),
        # --- dbt feature layer (features_step.py) ---
        ("dbt: build the feature layer (models + tests), source freshness, newest rows", build_features_step),
        # --- ml (ml_steps.py): needs the feature mart built by the dbt step before it ---
        ("ml: train LightGBM and the naive baselines (holdout: the newest 168 h)", ml_steps.train_step),
        ("ml: score every stored model on the holdout and promote the lowest MAE", ml_steps.promote_step),
        ("ml: predictions for the last 48 hours with the production model", ml_steps.predict_step),
        ("dbt: accuracy marts, then the leaderboard", ml_steps.accuracy_step),
        ("ml: walk-forward backtest and its chart", ml_steps.backtest_step),
        # --- orchestration (dags_step.py) ---
        ("airflow: the DAGs as Airflow parses them (Cosmos renders the dbt models as tasks)", describe_dags_step),
        # --- serving (serve_step.py): last, so it ends by saying how to open the dashboard ---
        ("serve: the read API and dashboard over the marts (reader role)", serve_step),
    ]


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for title, step in _steps():
        print(f"\n== {title}", flush=True)
        try:
            print(step(), flush=True)
        except Exception as exc:  # the demo's job is to say clearly which step failed and why
            print(f"error in step '{title}': {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
