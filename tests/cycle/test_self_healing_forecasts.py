"""Self-healing forecasts: an hour whose candle came late got a labelled fallback at its cycle; the next hourly
cycle, whose extract re-fetches the trailing window and brings the candle, replaces that fallback with the
production model's forecast on its own (no interval re-run by hand), keeping ``replaced_outcome = 'fallback'``
so availability at cycle time stays measurable. One more cycle changes nothing. Likewise an hour whose cycle never
ran (the database was down, the cycle was killed before predict) has no outcome at all; the next cycle forecasts it.

Real cycles (``cycle.run.run_hourly``) on base ``ct_cycle`` against a replay server of the test's own, whose
clock stands a few minutes after each interval's end, as cron's ``5 * * * *`` would find it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from candlecast.hours import HOUR
from tests.cycle.conftest import BASE
from tests.support import differences, snapshot

pytestmark = pytest.mark.integration

LATE = datetime(2024, 1, 9, 6)  # UTC; its candle appears 20 minutes after the hour closes
AFTER_CRON = timedelta(minutes=5)

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Healing:
    at_cycle: Rows  # forecast_outcomes of LATE's target after LATE's own cycle
    next_cycle: Any  # CycleResult of the next hourly cycle
    healed: Rows  # forecast_outcomes of LATE's target after it
    mart: Rows  # fct_forecast_outcomes of LATE's target after it
    again: Any  # CycleResult of the same cycle once more
    tables: tuple[Any, Any]  # (snapshot, forecast_outcomes with timestamps) before and after that one
    tables_again: tuple[Any, Any]


def _rows(engine, sql: str) -> Rows:
    from sqlalchemy import text

    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql)).mappings().all()]


def _has_production_model(engine) -> bool:
    from sqlalchemy.exc import DatabaseError

    try:
        return bool(_rows(engine, f"select 1 from `{BASE}_ml`.model_registry where status = 'production'"))
    except DatabaseError:  # no registry yet: this module runs alone
        return False


@pytest.fixture(scope="module")
def healing(cycle_env: dict[str, str], admin_engine) -> Iterator[Healing]:
    from cycle.context import RunContext
    from cycle.run import run_hourly, run_weekly
    from tools.replay import LateCandle, ReplayServer

    outcome_sql = (f"select * from `{BASE}_ml`.forecast_outcomes "
                   f"where target_hour = '{LATE + HOUR:%Y-%m-%d %H:%M}'")
    with ReplayServer(rate=None) as server:
        ctx = RunContext.resolve({**cycle_env, "COINBASE_API_URL": server.url})
        if not _has_production_model(admin_engine):
            run_weekly(datetime(2024, 1, 7, 23, tzinfo=UTC), ctx)  # what test_cycle_command's first test does
        server.schedule(LateCandle(LATE, minutes=20))

        server.set_clock((LATE + HOUR + AFTER_CRON).replace(tzinfo=UTC))
        run_hourly((LATE + HOUR).replace(tzinfo=UTC), ctx)  # LATE's cycle: its candle is not out yet
        at_cycle = _rows(admin_engine, outcome_sql)

        server.set_clock((LATE + 2 * HOUR + AFTER_CRON).replace(tzinfo=UTC))
        next_cycle = run_hourly((LATE + 2 * HOUR).replace(tzinfo=UTC), ctx)
        healed = _rows(admin_engine, outcome_sql)
        mart = _rows(admin_engine, f"select outcome, replaced_outcome, model_version from "
                                   f"`{BASE}_marts`.fct_forecast_outcomes "
                                   f"where target_hour = '{LATE + HOUR:%Y-%m-%d %H:%M}'")
        outcomes_sql = f"select * from `{BASE}_ml`.forecast_outcomes order by product_id, target_hour"
        tables = (snapshot(admin_engine, BASE), _rows(admin_engine, outcomes_sql))
        again = run_hourly((LATE + 2 * HOUR).replace(tzinfo=UTC), ctx)
        tables_again = (snapshot(admin_engine, BASE), _rows(admin_engine, outcomes_sql))
    yield Healing(at_cycle, next_cycle, healed, mart, again, tables, tables_again)


def test_a_fallback_hour_whose_candle_lands_later_is_a_model_forecast_after_the_next_cycle(
        healing: Healing) -> None:
    [first] = healing.at_cycle
    assert (first["outcome"], first["reason_code"], first["feature_hour"]) == ("fallback", "candle_missing", LATE)
    [row] = healing.healed
    assert (row["outcome"], row["replaced_outcome"], row["feature_hour"], row["base_hour"]) == (
        "model", "fallback", LATE, LATE)
    assert row["model_version"] is not None and row["reason"] is None
    assert row["created_at"] == first["created_at"]  # the hour's first record (at cycle time) is kept
    # the next cycle's predict step says so, and the accuracy mart counts it as a healed model forecast
    predict = healing.next_cycle.step("predict")
    assert [s["healed"] for s in predict.summary] == [[LATE.replace(tzinfo=None).isoformat()]]
    assert "healed 1 earlier hour(s) that had a fallback" in predict.detail
    assert healing.mart == [{"outcome": "model", "replaced_outcome": "fallback",
                             "model_version": row["model_version"]}]


def test_one_more_cycle_heals_nothing_and_changes_nothing(healing: Healing) -> None:
    predict = healing.again.step("predict")
    assert [s["healed"] for s in predict.summary] == [[]]
    assert "healed" not in predict.detail
    assert differences(healing.tables_again[0], healing.tables[0], ("again", "before")) == []
    assert healing.tables_again[1] == healing.tables[1]  # forecast_outcomes, its timestamps included


# --- an hour whose cycle never ran (database down, cycle killed before predict) -----------------------------

MISSED = datetime(2024, 1, 9, 12)  # feature hour of the cycle that never ran (ending MISSED + 1h)


@dataclass(frozen=True)
class MissedCycle:
    before: Rows  # forecast_outcomes of MISSED's target before the next cycle
    after: Rows  # and after it
    next_cycle: Any
    again: Any
    tables: tuple[Any, Any]
    tables_again: tuple[Any, Any]


@pytest.fixture(scope="module")
def missed(cycle_env: dict[str, str], admin_engine) -> Iterator[MissedCycle]:
    from cycle.context import RunContext
    from cycle.run import run_hourly, run_weekly
    from tools.replay import ReplayServer

    outcome_sql = (f"select * from `{BASE}_ml`.forecast_outcomes "
                   f"where target_hour = '{MISSED + HOUR:%Y-%m-%d %H:%M}'")
    outcomes_sql = f"select * from `{BASE}_ml`.forecast_outcomes order by product_id, target_hour"
    with ReplayServer(rate=None) as server:
        ctx = RunContext.resolve({**cycle_env, "COINBASE_API_URL": server.url})
        if not _has_production_model(admin_engine):
            run_weekly(datetime(2024, 1, 7, 23, tzinfo=UTC), ctx)

        def cycle(end: datetime) -> Any:
            server.set_clock((end + AFTER_CRON).replace(tzinfo=UTC))
            return run_hourly(end.replace(tzinfo=UTC), ctx)

        cycle(MISSED)  # the cycle before; the one ending MISSED + 1h never runs (as if the database was down)
        before = _rows(admin_engine, outcome_sql)
        next_cycle = cycle(MISSED + 2 * HOUR)
        after = _rows(admin_engine, outcome_sql)
        tables = (snapshot(admin_engine, BASE), _rows(admin_engine, outcomes_sql))
        again = cycle(MISSED + 2 * HOUR)
        tables_again = (snapshot(admin_engine, BASE), _rows(admin_engine, outcomes_sql))
    yield MissedCycle(before, after, next_cycle, again, tables, tables_again)


def test_an_hour_whose_cycle_never_ran_is_a_model_forecast_after_the_next_cycle(missed: MissedCycle) -> None:
    assert missed.before == []
    [row] = missed.after
    assert (row["outcome"], row["feature_hour"], row["base_hour"], row["replaced_outcome"]) == (
        "model", MISSED, MISSED, None)
    assert row["model_version"] is not None
    predict = missed.next_cycle.step("predict")
    assert [s["healed"] for s in predict.summary] == [[MISSED.isoformat()]]
    assert "healed 1 earlier hour(s)" in predict.detail


def test_one_more_run_of_that_cycle_heals_nothing_and_changes_nothing(missed: MissedCycle) -> None:
    assert [s["healed"] for s in missed.again.step("predict").summary] == [[]]
    assert differences(missed.tables_again[0], missed.tables[0], ("again", "before")) == []
    assert missed.tables_again[1] == missed.tables[1]
