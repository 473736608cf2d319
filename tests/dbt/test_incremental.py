"""Incremental runs of the feature layer equal a full refresh, row for row and value for value; rows computed
before their future existed equal the same rows computed with it (no lookahead); a column change fails
loudly until a full refresh.

Base ``ct_dbt_incr`` (its own, so the scenario never disturbs ``ct_dbt``): real BTC-USD candles from
2023-01-01 up to T0 = 2023-03-04 14:00, built in full; then one new hour; then a week more that contains the
4 hours Coinbase left out, a late correction of the previous newest hour, a new product, and one hour the API
did not serve yet; then, with no new hour, what the extractor's trailing re-fetch brings: that hour arriving
late and a correction 13 h behind the newest hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from candlecast.dbt_runner import DbtResult
from tests.dbt.conftest import rows_written, run_dbt

pytestmark = pytest.mark.integration

BASE = "ct_dbt_incr"
START = datetime(2023, 1, 1)
T0 = datetime(2023, 3, 4, 14)  # the newest hour of the first build
END = datetime(2023, 3, 12, 23)
LATE = datetime(2023, 3, 12, 3)  # absent at the third run, inserted before the fourth (20 h behind END)
CORRECTED_LATE = datetime(2023, 3, 12, 10)  # corrected before the fourth run
RECOMPUTE_HOURS = 216  # dbt_project.yml vars.recompute_hours
SELECT = ("+features_latest",)

Rows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class Scenario:
    first_build: Rows  # fct rows computed from candles up to T0 only
    after_one_hour: DbtResult
    before_late_fct: Rows  # after the third run, LATE still absent
    before_late_latest: Rows  # features_latest then: (product_id, hour, is_complete, is_forecastable)
    incremental_fct: Rows
    incremental_spine: Rows
    guard: DbtResult
    full_refresh_fct: Rows
    full_refresh_spine: Rows


def _rows(engine, table: str) -> Rows:
    from sqlalchemy import text

    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"select * from {table} order by product_id, hour"))]


def _columns(engine, table: str) -> list[str]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(f"show columns from {table}"))]


@pytest.fixture(scope="module")
def scenario(mariadb: dict[str, str], provision_schemas, admin_engine) -> Iterator[Scenario]:
    from sqlalchemy import text

    from candlecast.db import engine_for
    from extract.schema import ensure_raw_tables
    from tests.support import Candle, bundled_candles, load_raw_candles

    schemas = provision_schemas(BASE)
    fct, spine = f"{schemas.marts}.fct_candle_features", f"{schemas.intermediate}.int_candles__hourly_spine"
    btc = [c for c in bundled_candles() if START <= c.bucket_start <= END]
    loader = engine_for("loader")
    ensure_raw_tables(loader, schemas)
    with loader.begin() as conn:
        conn.execute(text(f"delete from `{schemas.raw}`.candles"))
    try:
        load_raw_candles(loader, schemas, [c for c in btc if c.bucket_start <= T0])
        run_dbt("run", select=SELECT, args=("--full-refresh",), base=BASE, name="incr-a")
        first_build = _rows(admin_engine, fct)

        load_raw_candles(loader, schemas, [c for c in btc if c.bucket_start == T0 + timedelta(hours=1)])
        after_one_hour = run_dbt("run", select=SELECT, base=BASE, name="incr-b")

        # A week more (with the 4-hour gap of 2023-03-04 17:00-20:00), the extractor re-fetching the previous
        # newest hour with a corrected close, and a second product that appears mid-way.
        later = [c for c in btc if c.bucket_start > T0 + timedelta(hours=1) and c.bucket_start != LATE]
        corrected = next(c for c in btc if c.bucket_start == T0 + timedelta(hours=1))
        corrected = Candle(corrected.time, corrected.low, corrected.high, corrected.open,
                           (corrected.low + corrected.high) / 2, corrected.volume)
        load_raw_candles(loader, schemas, [*later, corrected])
        eth = [Candle(c.time, c.low / 16, c.high / 16, c.open / 16, c.close / 16, c.volume * 10)
               for c in btc if c.bucket_start >= datetime(2023, 2, 20)]
        load_raw_candles(loader, schemas, eth, product_id="ETH-USD")
        run_dbt("run", select=SELECT, base=BASE, name="incr-c")
        before_late_fct = _rows(admin_engine, fct)
        before_late_latest = _rows(admin_engine, f"(select product_id, hour, is_complete, is_forecastable "
                                                 f"from {schemas.marts}.features_latest) as latest")

        # No new hour: the trailing re-fetch brings the late candle and a corrected one.
        late = next(c for c in btc if c.bucket_start == LATE)
        fix = next(c for c in btc if c.bucket_start == CORRECTED_LATE)
        load_raw_candles(loader, schemas, [late, Candle(fix.time, fix.low, fix.high, fix.open, fix.low, fix.volume)])
        run_dbt("run", select=SELECT, base=BASE, name="incr-d")
        incremental_fct, incremental_spine = _rows(admin_engine, fct), _rows(admin_engine, spine)

        # The table gains a column the model does not have (as after removing one from the model).
        with admin_engine.begin() as conn:
            conn.execute(text(f"alter table {fct} add column retired_feature double"))
        guard = run_dbt("run", select=SELECT, base=BASE, name="incr-guard", check=False)

        run_dbt("run", select=SELECT, args=("--full-refresh",), base=BASE, name="incr-full")
        yield Scenario(first_build, after_one_hour, before_late_fct, before_late_latest, incremental_fct,
                       incremental_spine, guard, _rows(admin_engine, fct), _rows(admin_engine, spine))
    finally:
        loader.dispose()


def _first_difference(a: Rows, b: Rows) -> str:
    for left, right in zip(a, b, strict=False):
        if left != right:
            diffs = [i for i, (x, y) in enumerate(zip(left, right, strict=True)) if x != y]
            values = [(left[i], right[i]) for i in diffs]
            return f"row {left[:2]} differs in columns {diffs}: {values}"
    return f"row counts {len(a)} vs {len(b)}"


def test_incremental_runs_equal_a_full_refresh_row_for_row_and_value_for_value(scenario: Scenario) -> None:
    assert scenario.incremental_fct == scenario.full_refresh_fct, _first_difference(
        scenario.incremental_fct, scenario.full_refresh_fct)
    assert scenario.incremental_spine == scenario.full_refresh_spine, _first_difference(
        scenario.incremental_spine, scenario.full_refresh_spine)
    # the scenario covered what it claims: both products, the gap, the corrected hour's target
    products = {r[0] for r in scenario.full_refresh_fct}
    assert products == {"BTC-USD", "ETH-USD"}
    hours = (END - START) // timedelta(hours=1) + 1
    eth_hours = (END - datetime(2023, 2, 20)) // timedelta(hours=1) + 1
    assert len(scenario.full_refresh_fct) == hours + eth_hours
    missing = [r[1] for r in scenario.full_refresh_fct if r[0] == "BTC-USD" and r[7] == 1]
    assert missing == [datetime(2023, 3, 4, h) for h in (17, 18, 19, 20)]


def test_an_hourly_run_rewrites_only_the_lookback_window(scenario: Scenario) -> None:
    # one new hour: the newest 216 h are recomputed (windows, and the previous hour's target), not history
    assert rows_written(scenario.after_one_hour, "fct_candle_features") == RECOMPUTE_HOURS + 2
    assert rows_written(scenario.after_one_hour, "int_candles__hourly_spine") <= RECOMPUTE_HOURS + 2


def test_rows_computed_without_their_future_equal_rows_computed_with_it(scenario: Scenario) -> None:
    # the first build never saw anything after T0; the final full refresh saw eight more days
    later = {(r[0], r[1]): r for r in scenario.full_refresh_fct}
    assert scenario.first_build[-1][1] == T0
    checked = 0
    for row in scenario.first_build:
        with_future = later[(row[0], row[1])]
        if row[1] == T0:
            # only the targets (the labelled forward-looking columns) may change: they now exist
            assert row[:-2] == with_future[:-2]
            assert row[-2:] == (None, None) and with_future[-2] is not None
        else:
            assert row == with_future, _first_difference([row], [with_future])
        checked += 1
    assert checked == (T0 - START) // timedelta(hours=1) + 1


def test_a_column_change_fails_loudly_until_a_full_refresh(scenario: Scenario) -> None:
    assert scenario.guard.returncode != 0
    assert "retired_feature" in scenario.guard.output
    assert "--full-refresh" in scenario.guard.output
    # and the documented path (dbt run/build --full-refresh) rebuilt it without the stray column
    assert len(scenario.full_refresh_fct[0]) == len(scenario.first_build[0])


def test_corrected_candle_and_its_target_are_picked_up_incrementally(scenario: Scenario) -> None:
    by_key = {(r[0], r[1]): r for r in scenario.incremental_fct}
    fixed = by_key[("BTC-USD", T0 + timedelta(hours=1))]
    high, low, close = fixed[3], fixed[4], fixed[5]
    assert close == (low + high) / 2 and isinstance(close, Decimal)
    assert by_key[("BTC-USD", T0)][-2] == close  # the previous hour's target follows the correction


def test_late_and_corrected_candles_inside_the_trailing_window_heal_incrementally(scenario: Scenario) -> None:
    # before they arrived, the late hour was a missing hour and the run equalled a full refresh of that raw state
    # everywhere the late data does not reach (from the hour before it on, targets and windows change)
    before = {(r[0], r[1]): r for r in scenario.before_late_fct}
    assert before[("BTC-USD", LATE)][7] == 1
    assert before[("BTC-USD", LATE + timedelta(hours=2))][-4] == 0  # is_complete: a window holds LATE
    untouched = [r for r in scenario.full_refresh_fct if r[0] == "ETH-USD" or r[1] < LATE - timedelta(hours=1)]
    assert [before[(r[0], r[1])] for r in untouched] == untouched
    # after the re-fetch brought them (no new hour), the incremental run equals a full refresh (asserted for
    # every row above) and the late hour is a real, forecastable candle whose neighbours' windows healed
    after = {(r[0], r[1]): r for r in scenario.incremental_fct}
    assert after[("BTC-USD", LATE)][7] == 0 and after[("BTC-USD", LATE)][-3] == 1  # is_forecastable
    assert after[("BTC-USD", LATE + timedelta(hours=2))][-4] == 1  # is_complete again
    assert after[("BTC-USD", CORRECTED_LATE)][5] == after[("BTC-USD", CORRECTED_LATE)][4]  # close = low now


def test_features_latest_shows_the_newest_hour_right_after_a_missing_one(scenario: Scenario) -> None:
    # With LATE absent, every BTC-USD hour after it has a window holding a missing hour (is_complete = 0) for a
    # week; the view still shows the newest hour, the one the hourly step forecasts from, not LATE - 1 h.
    assert scenario.before_late_latest == [("BTC-USD", END, 0, 1), ("ETH-USD", END, 1, 1)]
