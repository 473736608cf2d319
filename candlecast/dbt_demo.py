"""The `make demo` step of the feature layer: `dbt build` of the features, source freshness, newest rows.

dbt runs as a subprocess from ``.venv-dbt`` (it cannot share a virtualenv with Airflow 3) with the
connection settings in its environment; ``profiles.yml`` reads them through ``env_var()``.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from candlecast.settings import REPO_ROOT, effective_env

log = logging.getLogger(__name__)

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
# The feature layer: staging -> hourly spine -> fct_candle_features -> features_latest, with their tests.
FEATURE_SELECTION = ("--select", "+features_latest", "--indirect-selection", "cautious")


class DbtError(RuntimeError):
    """A dbt command failed; the message carries the end of its output."""


def dbt_executable(env: Mapping[str, str]) -> str:
    return env.get("CANDLECAST_DBT", str(REPO_ROOT / ".venv-dbt" / "bin" / "dbt"))


def run_dbt(args: Sequence[str], env: Mapping[str, str] | None = None, project_dir: Path = DBT_PROJECT_DIR,
            check: bool = True) -> str:
    """``dbt <args>`` on the project with the connection settings in its env; returns its output."""
    values = effective_env(env)
    cmd = [dbt_executable(values), *args, "--project-dir", str(project_dir), "--profiles-dir", str(REPO_ROOT)]
    log.info("running %s", " ".join(cmd))
    dbt_env = {**values, "DBT_SEND_ANONYMOUS_USAGE_STATS": "False", "DBT_USE_COLORS": "False"}
    result = subprocess.run(cmd, env=dbt_env, cwd=REPO_ROOT, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise DbtError(f"dbt {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout[-3000:]}"
                       f"{result.stderr[-1000:]}")
    return result.stdout


def _last_line_with(output: str, marker: str) -> str:
    lines = [line for line in output.splitlines() if marker in line]
    return re.sub(r"\s*\.{3,}\s*", " ", lines[-1].split("  ", 1)[-1]).strip() if lines else "ok"


def build_features_step() -> str:
    """`dbt build` of the feature layer, source freshness, then the newest feature rows as `reader` sees them."""
    from sqlalchemy import text

    from candlecast.db import engine_for
    from candlecast.settings import Schemas

    env = effective_env()
    build = run_dbt(["build", *FEATURE_SELECTION], env)
    # Reported, not fatal: the bundled candles keep the ingested_at of their first load, so a demo re-run
    # more than 6 h later finds them "stale", which is true and says nothing about the build.
    freshness = run_dbt(["source", "freshness"], env, check=False)
    schemas = Schemas(env.get("CANDLECAST_DB_SCHEMA", "candlecast"))
    reader = engine_for("reader", env)
    try:
        with reader.connect() as conn:
            total, complete, missing = conn.execute(text(
                f"select count(*), sum(is_complete), sum(is_missing_hour) from `{schemas.marts}`.fct_candle_features"
            )).one()
            newest = conn.execute(text(
                "select product_id, hour, close, log_return_1h, return_std_24h, volume_zscore_24h, is_complete, "
                f"target_close_1h from `{schemas.marts}`.fct_candle_features order by hour desc, product_id limit 5"
            )).all()
    finally:
        reader.dispose()
    header = (f"{'product':<9} {'hour (UTC)':<19} {'close':>11} {'ret_1h':>9} {'std_24h':>8} {'vol_z24':>7} "
              f"{'complete':>8} {'target_close_1h':>15}")
    rows = [
        f"{r.product_id:<9} {r.hour:%Y-%m-%d %H:%M}    {float(r.close):>11.2f} {_num(r.log_return_1h, 5):>9} "
        f"{_num(r.return_std_24h, 5):>8} {_num(r.volume_zscore_24h, 2):>7} {r.is_complete:>8} "
        f"{_num(r.target_close_1h, 2):>15}"
        for r in newest
    ]
    return "\n".join([
        f"dbt build: {_last_line_with(build, 'Done.')}",
        f"source freshness: {_last_line_with(freshness, ' freshness of ')}",
        f"{schemas.marts}.fct_candle_features: {total:,} product-hours, {int(complete or 0):,} complete, "
        f"{int(missing or 0)} missing hours filled; the newest rows (target NULL: the next hour is not closed yet):",
        header,
        *rows,
        f"docs: `make docs-serve` -> http://127.0.0.1:8580; SQL: the reader role on {schemas.marts} "
        "(README, 'The feature layer').",
    ])


def _num(value: object, digits: int) -> str:
    return "NULL" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


if __name__ == "__main__":  # the step on its own: python -m candlecast.withenv .venv/bin/python -m candlecast.dbt_demo
    print(build_features_step())
