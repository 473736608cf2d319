"""What a soak is judged on, read from the tables and the replay server's request log.

- forecast availability: of the hours whose just-closed candle the API served at cycle time, the share
  with a production-model forecast;
- every soak hour has an outcome: a forecast, or a labelled fallback / "no forecast" row;
- the raw table equals what the API finally publishes (late and corrected candles landed);
- the feature mart equals a full refresh; no extract run is left ``running``;
- a snapshot of every table the cycles write, to show that re-running changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from candlecast.hours import naive_utc
from tools.replay.clock import HOUR_S
from tools.soak.plan import HOUR, PRODUCT

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tools.soak.harness import Soak

# Columns that say when or by which run a row was written (besides every ``*_at``), not what it says.
VOLATILE_COLUMNS = {"metadata", "run_id"}


def _unix(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp()) if moment.tzinfo is None else int(moment.timestamp())


def served_at_cycle_time(soak: Soak) -> set[int]:
    """Cycles whose just-closed candle the API delivered intact while the clock was at that cycle's hour."""
    plan = soak.plan
    served: set[int] = set()
    by_hour = {_unix(plan.end(k)): k for k in range(plan.hours)}
    for record in soak.server.requests:
        if record.clock is None or record.status != 200:
            continue
        k = by_hour.get(record.clock - record.clock % HOUR_S)
        if k is not None and _unix(plan.feature_hour(k)) in record.served:
            served.add(k)
    return served


Snapshot = dict[str, "Table"]


def table_exists(engine: Engine, database: str, table: str) -> bool:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "select count(*) from information_schema.tables where table_schema = %s and table_name = %s",
            (database, table),
        ).scalar_one() > 0


@dataclass(frozen=True)
class Outcome:
    target_hour: datetime
    outcome: str  # "model", "fallback" or "none" (the hourly step's label)
    model_version: str | None
    reason_code: str | None


def outcomes(soak: Soak) -> dict[datetime, Outcome]:
    """What the hourly step recorded per target hour of the soak (``forecast_outcomes``; a served ``predictions``
    row, role production, counts as a model outcome where that table does not exist). Shadow forecasts are not
    outcomes: availability counts what production served."""
    s, plan = soak.schemas, soak.plan
    first, last = naive_utc(plan.end(0)), naive_utc(plan.end(plan.hours - 1))
    out: dict[datetime, Outcome] = {}
    with soak.admin.connect() as conn:
        if table_exists(soak.admin, s.ml, "forecast_outcomes"):
            rows = conn.exec_driver_sql(
                f"select target_hour, outcome, model_version, reason_code from `{s.ml}`.forecast_outcomes "
                "where product_id = %s and target_hour between %s and %s", (PRODUCT, first, last))
            out = {r[0]: Outcome(r[0], r[1], r[2], r[3]) for r in rows}
        if table_exists(soak.admin, s.ml, "predictions"):
            rows = conn.exec_driver_sql(
                f"select target_hour, model_version from `{s.ml}`.predictions "
                "where product_id = %s and role = 'production' and target_hour between %s and %s",
                (PRODUCT, first, last))
            for hour, version in rows:
                out.setdefault(hour, Outcome(hour, "model", version, None))
    return out


@dataclass(frozen=True)
class Availability:
    served: int  # hours whose just-closed candle the API served at cycle time
    forecast: int  # of those, hours with a production-model forecast
    missing: tuple[datetime, ...]  # served hours without one

    @property
    def ratio(self) -> float:
        return self.forecast / self.served if self.served else 0.0


def availability(soak: Soak) -> Availability:
    recorded = outcomes(soak)
    served = served_at_cycle_time(soak)
    missing = []
    for k in sorted(served):
        target = naive_utc(soak.plan.end(k))
        got = recorded.get(target)
        if got is None or got.outcome != "model":
            missing.append(target)
    return Availability(len(served), len(served) - len(missing), tuple(missing))


def unlabelled_hours(soak: Soak) -> list[datetime]:
    """Soak hours with neither a forecast nor a labelled outcome."""
    recorded = outcomes(soak)
    return [naive_utc(soak.plan.end(k)) for k in range(soak.plan.hours) if naive_utc(soak.plan.end(k)) not in recorded]


def raw_candles(soak: Soak) -> dict[int, tuple[Decimal, ...]]:
    """The raw table, ``{bucket start: (low, high, open, close, volume)}`` (the API's order)."""
    with soak.admin.connect() as conn:
        rows = conn.exec_driver_sql(
            f"select bucket_start, low, high, open, close, volume from `{soak.schemas.raw}`.candles "
            "where product_id = %s", (PRODUCT,))
        return {_unix(r[0]): tuple(Decimal(v) for v in r[1:]) for r in rows}


def final_truth(soak: Soak) -> dict[int, tuple[Decimal, ...]]:
    """Every closed candle the API publishes at the end, over the hours the soak stored."""
    first, stop = _unix(soak.plan.history_start), _unix(soak.plan.end(soak.plan.hours - 1))
    truth = soak.server.truth(PRODUCT, now=soak.plan.final_clock)
    return {t: tuple(Decimal(v) for v in row) for t, row in truth.items() if first <= t < stop}


def truth_differences(soak: Soak, limit: int = 5) -> list[str]:
    stored, truth = raw_candles(soak), final_truth(soak)
    problems = []
    for t in sorted(set(stored) | set(truth)):
        if stored.get(t) != truth.get(t):
            when = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")
            problems.append(f"{when}: stored {stored.get(t)}, API {truth.get(t)}")
    return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit else [])


def running_runs(soak: Soak) -> int:
    with soak.admin.connect() as conn:
        return int(conn.exec_driver_sql(
            f"select count(*) from `{soak.schemas.raw}`.extract_runs where status = 'running'").scalar_one())


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: frozenset[tuple[Any, ...]]


def table_rows(engine: Engine, database: str, table: str) -> Table:
    """Every row, without the columns that only say when (or by which run) it was written."""
    with engine.connect() as conn:
        columns = [r[0] for r in conn.exec_driver_sql(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "order by ordinal_position", (database, table))]
        kept = tuple(c for c in columns if not c.lower().endswith("_at") and c.lower() not in VOLATILE_COLUMNS)
        if not kept:
            return Table((), frozenset())
        query = f"select {', '.join(f'`{c}`' for c in kept)} from `{database}`.`{table}`"
        return Table(kept, frozenset(tuple(r) for r in conn.exec_driver_sql(query)))


def snapshot(soak: Soak) -> Snapshot:
    """Every table of the soak's base (raw, dbt, ML), the run log and the stored models' files aside."""
    out: Snapshot = {}
    # the run log has one row per run by design; a stored model's files include its metadata.json, which says when
    # it was trained (the model files' checksum is in model_store_versions)
    skipped = {(soak.schemas.raw, "extract_runs"), (soak.schemas.ml, "model_store_files")}
    with soak.admin.connect() as conn:
        for database in soak.schemas.all():
            tables = [r[0] for r in conn.exec_driver_sql(
                "select table_name from information_schema.tables where table_schema = %s "
                "and table_name not like '%%dbt_tmp%%' order by table_name", (database,))]
            for table in tables:
                if (database, table) not in skipped:
                    out[f"{database}.{table}"] = table_rows(soak.admin, database, table)
    return out


# Tables holding forecasts (or derived from them): a forecast made before a correction reached its feature
# row is made again, from the corrected data, when its hour is re-run.
FORECAST_TABLES = ("predictions", "forecast_skips", "forecast_outcomes", "fct_forecast_outcomes",
                   "fct_prediction_accuracy")
DERIVED_FROM_FORECASTS = ("model_leaderboard", "fct_model_accuracy_monthly")


def snapshot_differences(before: Snapshot, after: Snapshot,
                         may_change: tuple[datetime, datetime] | None = None) -> list[str]:
    """What changed between two snapshots; with ``may_change`` = (first, last) target hour, changed
    forecasts of those hours (and what is aggregated from them) are not counted."""
    problems = []
    forecasts_changed = False
    for table in sorted(set(before) | set(after)):
        a, b = before.get(table), after.get(table)
        if a is None or b is None:
            problems.append(f"{table}: only {'before' if b is None else 'after'}")
            continue
        gone, new = a.rows - b.rows, b.rows - a.rows
        name = table.split(".", 1)[1]
        if may_change and name in FORECAST_TABLES and "target_hour" in a.columns:
            at = a.columns.index("target_hour")
            first, last = may_change
            forecasts_changed |= bool(gone or new)
            gone = frozenset(r for r in gone if not first <= r[at] <= last)
            new = frozenset(r for r in new if not first <= r[at] <= last)
        if name in DERIVED_FROM_FORECASTS and forecasts_changed:
            continue
        if gone or new:
            problems.append(f"{table}: {len(gone)} rows changed or gone (e.g. {sorted(gone, key=repr)[:2]}), "
                            f"{len(new)} new (e.g. {sorted(new, key=repr)[:2]})")
    return problems


def correction_window(soak: Soak) -> tuple[datetime, datetime]:
    """The target hours forecast after the corrected hour closed but before the correction came out."""
    plan = soak.plan
    corrected = plan.feature_hour(plan.corrected_at)
    return naive_utc(corrected + HOUR), naive_utc(corrected + HOUR + plan.corrected_after)


def feature_mart(soak: Soak) -> Table:
    return table_rows(soak.admin, soak.schemas.marts, "fct_candle_features")


def full_refresh_features(soak: Soak) -> None:
    """Rebuild the feature chain from raw with ``--full-refresh`` (through the one dbt runner)."""
    from candlecast.dbt_runner import run_dbt

    work = soak.config.work_dir / "full-refresh"
    run_dbt(["run"], env=soak.env, select=["+fct_candle_features"], args=["--full-refresh"],
            target_path=work / "target", log_path=work / "logs")


def fallback_cycles(soak: Soak) -> list[int]:
    """Cycles whose hour holds a labelled fallback (or nothing) rather than the model's forecast."""
    recorded = outcomes(soak)
    return [k for k in range(soak.plan.hours)
            if (got := recorded.get(naive_utc(soak.plan.end(k)))) is None or got.outcome != "model"]

