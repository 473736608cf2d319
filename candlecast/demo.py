"""`make demo`: the whole offline pipeline on the bundled real BTC-USD candles, then where to look.

Each step is a function owned by the stage it exercises; this module only runs them in order and
prints their one-paragraph summaries.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def _steps() -> list[tuple[str, Callable[[], str]]]:
    from candlecast.airflow_demo import describe_dags_step
    from candlecast.dbt_demo import build_features_step
    from extract.demo import backfill_bundled_sample
    from ml import demo as ml_demo

    return [
        ("extract: backfill the bundled candles over HTTP from the replay server", backfill_bundled_sample),
        # --- dbt feature layer (candlecast/dbt_demo.py) ---
        ("dbt: build the feature layer (models + tests), source freshness, newest rows", build_features_step),
        # --- ml (ml/demo.py): needs the feature mart built by the dbt step before it ---
        ("ml: train LightGBM and the naive baselines (holdout: the newest 168 h)", ml_demo.train_step),
        ("ml: score every stored model on the holdout and promote the lowest MAE", ml_demo.promote_step),
        ("ml: predictions for the last 48 hours with the production model", ml_demo.predict_step),
        ("dbt: accuracy marts, then the leaderboard", ml_demo.accuracy_step),
        ("ml: walk-forward backtest and its chart", ml_demo.backtest_step),
        # --- orchestration (candlecast/airflow_demo.py) ---
        ("airflow: the DAGs as Airflow parses them (Cosmos renders the dbt models as tasks)", describe_dags_step),
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
