"""The accuracy marts' incremental runs equal a full refresh, row for row and value for value, and really are
incremental (they rewrite the hours that changed, not the history).

Base ``ct_dbt_acc`` (its own): 100 days of the bundled BTC-USD candles through the real feature layer, and ten
registered models' forecasts of every hour (one served, nine shadows) with the served outcomes, written straight
into the ML tables in SQL. Built in full; then what an hour of operation brings: the next hours' forecasts, a new
model's shadow forecasts, an old hour healed (its fallback replaced, its forecast rewritten two months back), an
old hour re-served by another model after a promotion (roles swapped), and a candle corrected a day behind the
newest hour (its realized close, and the next hour's previous close, change); then one incremental `dbt build`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from candlecast.dbt_runner import DbtResult
from tests.dbt.conftest import rows_written, run_dbt

pytestmark = pytest.mark.integration

BASE = "ct_dbt_acc"
PRODUCT = "BTC-USD"
START, END = datetime(2023, 10, 1), datetime(2024, 1, 9, 23)  # the candles loaded
FIRST_FORECAST = datetime(2023, 10, 9)  # feature hours forecast from here (after the 168 h warm-up) ...
BUILT_UNTIL = datetime(2024, 1, 8)  # ... up to here at the full build; the next hours come after
HEALED = datetime(2023, 11, 1, 5)  # a target hour two months behind: its forecast rewritten, its outcome healed
RESERVED = datetime(2023, 11, 2, 10)  # a target hour re-served by model 1 (model 0's row becomes a shadow)
CORRECTED = datetime(2024, 1, 7, 12)  # a candle corrected 35 h behind the newest hour
MODELS = 10
ACCURACY = ("fct_prediction_accuracy", "fct_model_accuracy_monthly", "model_leaderboard", "fct_forecast_outcomes")

Rows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class Scenario:
    incremental: DbtResult
    incremental_tables: dict[str, Rows]
    full_refresh_tables: dict[str, Rows]


def _tables(engine, marts: str) -> dict[str, Rows]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f"select * from `{marts}`.{t} order by 1, 2, 3"))]
                for t in ACCURACY}


def _forecast(conn, ml: str, marts: str, first: datetime, end: datetime, models: str = f"seq_0_to_{MODELS - 1}",
              written: str = "utc_timestamp(6)") -> None:
    """Every listed model's forecast from each feature hour in [first, end), model 0's served (its outcome too),
    written at ``written``."""
    from sqlalchemy import text

    hours = "f.product_id = :p and f.hour >= :first and f.hour < :end and f.is_forecastable = 1"
    params = {"p": PRODUCT, "first": first, "end": end}
    conn.execute(text(
        f"insert into `{ml}`.predictions (product_id, target_hour, model_version, role, predicted_close, lower_80, "
        "upper_80, feature_hour, created_at, updated_at) select f.product_id, f.hour + interval 1 hour, "
        "concat('m', m.seq), if(m.seq = 0, 'production', 'shadow'), f.close * (1 + (m.seq - 4.5) / 4000), "
        f"f.close * 0.995, f.close * 1.005, f.hour, {written}, {written} "
        f"from `{marts}`.fct_candle_features f cross join `{ml}`.{models} m where {hours}"), params)
    if models.startswith("seq_0_"):
        conn.execute(text(
            f"insert into `{ml}`.forecast_outcomes (product_id, target_hour, feature_hour, outcome, model_version, "
            "predicted_close, lower_80, upper_80, base_hour, created_at, updated_at) select f.product_id, "
            "f.hour + interval 1 hour, f.hour, 'model', 'm0', f.close * (1 - 4.5 / 4000), f.close * 0.995, "
            f"f.close * 1.005, f.hour, {written}, {written} from `{marts}`.fct_candle_features f "
            f"where {hours}"), params)


@pytest.fixture(scope="module")
def scenario(mariadb: dict[str, str], provision_schemas, admin_engine) -> Iterator[Scenario]:
    from sqlalchemy import text

    from candlecast.db import engine_for
    from ml.registry import ensure_ml_tables
    from tests.support import Candle, bundled_candles, load_raw_candles

    schemas = provision_schemas(BASE, fresh=True)
    ml, marts = schemas.ml, schemas.marts
    loader, engine = engine_for("loader"), engine_for("ml")
    candles = [c for c in bundled_candles() if START <= c.bucket_start <= END]
    try:
        load_raw_candles(loader, schemas, candles)
        run_dbt("run", select=("+fct_candle_features",), args=("--full-refresh",), base=BASE, name="acc-features")
        ensure_ml_tables(engine, schemas)
        with engine.begin() as conn:
            conn.execute(text(
                f"insert into `{ml}`.model_registry (model_version, product_id, kind, status, training_cutoff, "
                "trained_at, feature_hash, checksum, train_rows, metadata, registered_at, status_changed_at) "
                "select concat('m', seq), :p, if(seq = 1, 'naive_persistence', 'lightgbm'), "
                "if(seq = 0, 'production', 'candidate'), :c, :c, repeat('0', 64), repeat('0', 64), 1, '{}', "
                f"utc_timestamp(6), utc_timestamp(6) from `{ml}`.seq_0_to_{MODELS}"),
                {"p": PRODUCT, "c": FIRST_FORECAST})
            # the history as the hourly step wrote it: each hour's forecasts just after the hour closed
            _forecast(conn, ml, marts, FIRST_FORECAST, BUILT_UNTIL, written="f.hour + interval 65 minute")
            conn.execute(text(f"delete from `{ml}`.predictions where model_version = 'm{MODELS}'"))
            conn.execute(text(f"update `{ml}`.forecast_outcomes set outcome = 'fallback', model_version = null, "
                              "lower_80 = null, upper_80 = null, reason_code = 'candle_missing', reason = 'late' "
                              "where target_hour = :h"), {"h": HEALED})
        run_dbt("build", select=("tag:accuracy",), base=BASE, name="acc-full")

        # an hour of operation later (the writes as the hourly step makes them: updated_at moves)
        fix = next(c for c in candles if c.bucket_start == CORRECTED)
        load_raw_candles(loader, schemas, [Candle(fix.time, fix.low, fix.high, fix.open, fix.low, fix.volume)])
        with engine.begin() as conn:
            _forecast(conn, ml, marts, BUILT_UNTIL, BUILT_UNTIL + timedelta(hours=3))
            _forecast(conn, ml, marts, BUILT_UNTIL - timedelta(hours=48), BUILT_UNTIL + timedelta(hours=3),
                      models=f"seq_{MODELS}_to_{MODELS}")  # a newly registered model's shadow forecasts
            conn.execute(text(f"update `{ml}`.predictions set predicted_close = predicted_close * 1.01, "
                              "updated_at = utc_timestamp(6) where target_hour = :h and model_version = 'm0'"),
                         {"h": HEALED})
            conn.execute(text(f"update `{ml}`.predictions set role = if(model_version = 'm0', 'shadow', "
                              "'production'), updated_at = utc_timestamp(6) where target_hour = :h "
                              "and model_version in ('m0', 'm1')"), {"h": RESERVED})
            # each hour's outcome is its served forecast (as the hourly step writes them)
            conn.execute(text(
                f"update `{ml}`.forecast_outcomes o inner join `{ml}`.predictions p on p.product_id = o.product_id "
                "and p.target_hour = o.target_hour and p.role = 'production' "
                "set o.replaced_outcome = if(o.outcome = 'fallback', 'fallback', o.replaced_outcome), "
                "o.outcome = 'model', o.model_version = p.model_version, o.predicted_close = p.predicted_close, "
                "o.lower_80 = p.lower_80, o.upper_80 = p.upper_80, o.reason_code = null, o.reason = null, "
                "o.updated_at = utc_timestamp(6) where o.target_hour in (:healed, :reserved)"),
                {"healed": HEALED, "reserved": RESERVED})
        run_dbt("run", select=("+fct_candle_features",), base=BASE, name="acc-features-incr")
        incremental = run_dbt("build", select=("tag:accuracy",), base=BASE, name="acc-incr")
        incremental_tables = _tables(admin_engine, marts)
        run_dbt("run", select=("tag:accuracy",), args=("--full-refresh",), base=BASE, name="acc-refresh")
        yield Scenario(incremental, incremental_tables, _tables(admin_engine, marts))
    finally:
        loader.dispose()
        engine.dispose()


def test_incremental_accuracy_marts_equal_a_full_refresh(scenario: Scenario) -> None:
    for table in ACCURACY:
        got, want = scenario.incremental_tables[table], scenario.full_refresh_tables[table]
        first = next((f"{a} != {b}" for a, b in zip(got, want, strict=False) if a != b), f"{len(got)} vs {len(want)}")
        assert got == want, f"{table}: {first}"
    # the scenario holds what it claims: the new model, the healed and re-served hours, the corrected candle
    accuracy = {(r[1], r[2]): r for r in scenario.full_refresh_tables["fct_prediction_accuracy"]}
    assert (BUILT_UNTIL + timedelta(hours=3), f"m{MODELS}") in accuracy
    assert accuracy[(RESERVED, "m0")][3] == "shadow" and accuracy[(RESERVED, "m1")][3] == "production"
    outcomes = {r[1]: r for r in scenario.full_refresh_tables["fct_forecast_outcomes"]}
    assert outcomes[HEALED][3] == "model"


def test_the_hourly_run_rewrites_the_recent_and_changed_hours_not_the_history(scenario: Scenario) -> None:
    total = len(scenario.full_refresh_tables["fct_prediction_accuracy"])
    rewritten = rows_written(scenario.incremental, "fct_prediction_accuracy")
    # the recompute window (216 h + the new hours) of 10-11 models, and the two old hours' changed rows
    assert 0 < rewritten <= 11 * 240 and rewritten < total / 5
    assert rows_written(scenario.incremental, "fct_model_accuracy_monthly") <= 11 * 3  # Nov, Dec, Jan


def test_the_hourly_builds_tests_read_the_recent_accuracy_rows(scenario: Scenario, admin_engine) -> None:
    """With ``tests_scope: recent`` (the hourly builds) the accuracy marts' tests see a fault in the newest hours and
    not one two months back; the weekly build's tests (every row) see both. A generic test and a singular one."""
    from sqlalchemy import text

    from candlecast.settings import Schemas

    marts = f"`{Schemas(BASE).marts}`"
    accuracy, outcomes = f"{marts}.fct_prediction_accuracy", f"{marts}.fct_forecast_outcomes"
    with admin_engine.connect() as conn:
        newest = conn.execute(text(f"select max(target_hour) from {outcomes} where outcome = 'model'")).scalar_one()
    hours = {"recent": newest - timedelta(hours=3), "old": HEALED}
    with admin_engine.begin() as conn:
        kinds = {h: conn.execute(text(f"select model_kind from {accuracy} where target_hour = :h "
                                      "and model_version = 'm0'"), {"h": h}).scalar_one() for h in hours.values()}
        conn.execute(text(f"update {accuracy} set model_kind = null where model_version = 'm0' "
                          "and target_hour in (:recent, :old)"), hours)
        # a model outcome with a reason breaks assert_forecast_outcomes_are_labelled
        assert conn.execute(text(f"update {outcomes} set reason = 'planted' where outcome = 'model' "
                                 "and target_hour in (:recent, :old)"), hours).rowcount == 2
    try:
        failures: dict[str, dict[str, int]] = {}
        for scope in ("recent", "all"):
            run = run_dbt("test", select=("not_null_fct_prediction_accuracy_model_kind",
                                          "assert_forecast_outcomes_are_labelled"),
                          base=BASE, name=f"acc-scope-{scope}", args=("--vars", f'{{"tests_scope": "{scope}"}}'),
                          check=False)
            failures[scope] = {r["unique_id"].split(".")[2]: r["failures"]
                               for r in run.artifact("run_results.json")["results"]}
        assert failures == {
            "recent": {"not_null_fct_prediction_accuracy_model_kind": 1, "assert_forecast_outcomes_are_labelled": 1},
            "all": {"not_null_fct_prediction_accuracy_model_kind": 2, "assert_forecast_outcomes_are_labelled": 2},
        }
    finally:
        with admin_engine.begin() as conn:
            for h, kind in kinds.items():
                conn.execute(text(f"update {accuracy} set model_kind = :k where model_version = 'm0' "
                                  "and target_hour = :h"), {"k": kind, "h": h})
            conn.execute(text(f"update {outcomes} set reason = null where reason = 'planted'"))


def test_the_leaderboard_check_finds_a_wrong_figure_and_reads_only_the_trailing_week(scenario: Scenario,
                                                                                      admin_engine) -> None:
    """assert_leaderboard_matches_accuracy reads the accuracy mart from a literal bound (its trailing week, through
    the target_hour index: it read the whole mart before), and still names a leaderboard figure that is wrong."""
    from sqlalchemy import text

    from candlecast.settings import Schemas

    board = f"`{Schemas(BASE).marts}`.model_leaderboard"
    with admin_engine.begin() as conn:
        planted = conn.execute(text(f"update {board} set mae_168h = mae_168h + 1 where model_version = 'm0'"))
        assert planted.rowcount == 1
    try:
        run = run_dbt("test", select=("assert_leaderboard_matches_accuracy",), base=BASE, name="acc-leaderboard",
                      check=False)
        [result] = run.artifact("run_results.json")["results"]
        assert (result["status"], result["failures"]) == ("fail", 1), result
        compiled = next(run.target_path.rglob("assert_leaderboard_matches_accuracy.sql")).read_text()
        assert "and target_hour > timestamp '" in compiled
    finally:
        with admin_engine.begin() as conn:
            conn.execute(text(f"update {board} set mae_168h = mae_168h - 1 where model_version = 'm0'"))
