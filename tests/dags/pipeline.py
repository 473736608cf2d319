"""The same hours run directly (library calls and the dbt CLI, no Airflow), and table snapshots to compare.

This is the reference the DAG runs are held to: Airflow, Cosmos and the data interval must add nothing and
lose nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from candlecast.settings import Schemas
from tests.dags.conftest import run_dbt, store_dir

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

HOUR = timedelta(hours=1)
FEATURES = ["+fct_candle_features", "+features_latest"]
ACCURACY = ["fct_prediction_accuracy", "model_leaderboard", "fct_forecast_outcomes"]
# Columns that record *when* something was written (or a run's id), not *what*: they differ between
# any two runs by design and are left out of comparisons.
VOLATILE_COLUMNS = {"metadata", "run_id"}


def base_env(base: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` pointed at ``base`` and its model store (no change to ``os.environ``: this runs in a thread)."""
    return {**env, "CANDLECAST_DB_SCHEMA": base, "CANDLECAST_MODEL_STORE": str(store_dir(base))}


@contextmanager
def engine(role: str, env: Mapping[str, str]) -> Iterator[tuple[Engine, Schemas]]:
    from candlecast.db import make_engine
    from candlecast.settings import db_settings

    settings = db_settings(role, env)  # type: ignore[arg-type]
    eng = make_engine(settings)
    try:
        yield eng, settings.schemas
    finally:
        eng.dispose()


def backfill(env: Mapping[str, str], start: datetime, end: datetime, product: str = "BTC-USD") -> None:
    from extract.pipeline import backfill as extract_backfill
    from extract.settings import ExtractSettings

    with engine("loader", env) as (eng, schemas):
        settings = ExtractSettings.from_env(env)
        result = extract_backfill(product, start, end, engine=eng, schemas=schemas, settings=settings, now=end)
        assert result.status == "success", result.summary()


def dbt_build(env: Mapping[str, str], select: list[str]) -> None:
    run_dbt("build", select, env)


def retrain(env: Mapping[str, str], cutoff: datetime, window_end: datetime, product: str = "BTC-USD") -> None:
    from ml.evaluate import evaluate
    from ml.promote import promote
    from ml.store import ModelStore
    from ml.train import train

    with engine("ml", env) as (eng, schemas):
        store = ModelStore(env["CANDLECAST_MODEL_STORE"])
        train(eng, schemas, store, product, cutoff)
        promote(eng, schemas, evaluate(eng, schemas, store, product, window_end))


def predict(env: Mapping[str, str], feature_hour: datetime, product: str = "BTC-USD") -> None:
    from ml.predict import forecast_hour
    from ml.store import ModelStore

    with engine("ml", env) as (eng, schemas):
        forecast_hour(eng, schemas, ModelStore(env["CANDLECAST_MODEL_STORE"]), product, feature_hour)


def hourly(env: Mapping[str, str], hour: datetime) -> None:
    """What one hourly interval [hour, hour + 1h) does, done by hand."""
    backfill(env, hour, hour + HOUR)
    dbt_build(env, FEATURES)
    predict(env, hour)
    dbt_build(env, ACCURACY)


class DirectRun:
    """The reference, run in a background thread while the DAG runs go on (it shares nothing with them but
    the MariaDB server and the replay server): history, weekly retrain, then the two hourly intervals.
    ``wait(stage)`` blocks until that stage is done and re-raises its error."""

    STAGES = ("weekly", "hourly", "next_hourly")

    def __init__(self, env: Mapping[str, str], history_start: datetime, first_hour: datetime,
                 window_end: datetime, holdout: timedelta) -> None:
        import threading

        self.env = dict(env)  # a snapshot: tests change os.environ meanwhile
        self.args = (history_start, first_hour, window_end, holdout)
        self.done = {stage: threading.Event() for stage in self.STAGES}
        # The second hour waits for this: the first hour's comparison must see the base before it.
        self.release_next_hour = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="direct-reference", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        history_start, first_hour, window_end, holdout = self.args
        try:
            backfill(self.env, history_start, first_hour)
            dbt_build(self.env, FEATURES)
            retrain(self.env, window_end - holdout, window_end)
            self.done["weekly"].set()
            hourly(self.env, first_hour)
            self.done["hourly"].set()
            self.release_next_hour.wait()
            hourly(self.env, first_hour + HOUR)
            self.done["next_hourly"].set()
        except BaseException as exc:
            self.error = exc
            for event in self.done.values():
                event.set()

    def wait(self, stage: str, timeout: float = 900) -> None:
        assert self.done[stage].wait(timeout), f"direct reference run: stage {stage} not done in {timeout:.0f} s"
        if self.error is not None:
            raise AssertionError(f"direct reference run failed: {self.error!r}") from self.error


def snapshot(admin: Engine, base: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table and view of a base (all its databases), rows sorted, volatile columns left out."""
    from sqlalchemy import text

    schemas = Schemas(base)
    out: dict[str, list[tuple[Any, ...]]] = {}
    with admin.connect() as conn:
        for database in schemas.all():
            tables = conn.execute(
                text("select table_name from information_schema.tables where table_schema = :s "
                     "and table_name not like '%%__dbt_tmp%%' order by table_name"), {"s": database},
            ).scalars().all()
            for table in tables:
                columns = conn.execute(
                    text("select column_name from information_schema.columns where table_schema = :s "
                         "and table_name = :t order by ordinal_position"), {"s": database, "t": table},
                ).scalars().all()
                keep = [c for c in columns if not c.lower().endswith("_at") and c.lower() not in VOLATILE_COLUMNS]
                if database == schemas.raw and table == "extract_runs":
                    continue  # one row per run: the DAG and the direct run are different runs
                cols = ", ".join(f"`{c}`" for c in keep)
                rows = conn.execute(text(f"select {cols} from `{database}`.`{table}`")).all()
                key = f"{database.removeprefix(base)}.{table}"
                out[key] = sorted((tuple(r) for r in rows), key=repr)
    return out


def differences(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    problems = []
    for table in sorted(set(a) | set(b)):
        if table not in a or table not in b:
            problems.append(f"{table}: only in {'DAG run' if table in a else 'direct run'}")
        elif a[table] != b[table]:
            only_a = [r for r in a[table] if r not in b[table]][:3]
            only_b = [r for r in b[table] if r not in a[table]][:3]
            problems.append(f"{table}: {len(a[table])} vs {len(b[table])} rows; "
                            f"DAG only {only_a}; direct only {only_b}")
    return problems
