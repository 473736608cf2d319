"""The feature layer built by dbt over the bundled real candles: dbt's own tests, keys, the column contract,
the missing hours, every feature against an independent pandas computation, grants and docs."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.dbt.conftest import BASE, FEATURE_COLUMNS, BuiltLayer, run_dbt

pytestmark = pytest.mark.integration

GAP = [datetime(2023, 3, 4, h) for h in (17, 18, 19, 20)]  # the 4 hours Coinbase left out


def _frame(engine, sql: str) -> pd.DataFrame:
    from sqlalchemy import text

    with engine.connect() as conn:
        result = conn.execute(text(sql))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def test_dbt_build_runs_every_model_and_test_successfully(built_layer: BuiltLayer) -> None:
    results = built_layer.build.artifact("run_results.json")["results"]
    by_kind: dict[str, list[str]] = {}
    for r in results:
        by_kind.setdefault(r["unique_id"].split(".")[0], []).append(r["status"])
        assert r["status"] in ("success", "pass"), f"{r['unique_id']}: {r['status']} {r.get('message')}"
    assert len(by_kind["model"]) == 4
    # generic tests (unique, not_null, relationships, accepted ranges/values) and the singular ones
    assert len(by_kind["test"]) >= 55
    names = {r["unique_id"] for r in results}
    for singular in ("assert_spine_is_continuous", "assert_features_use_no_future_hours",
                     "assert_target_is_next_hour_close", "assert_complete_rows_have_every_feature"):
        assert f"test.candlecast.{singular}" in names


def test_source_freshness_passes_on_freshly_loaded_candles(built_layer: BuiltLayer) -> None:
    sources = built_layer.freshness.artifact("sources.json")["results"]
    assert [(s["unique_id"], s["status"]) for s in sources] == [("source.candlecast.coinbase.candles", "pass")]
    assert sources[0]["criteria"]["warn_after"] == {"count": 2, "period": "hour"}
    assert sources[0]["criteria"]["error_after"] == {"count": 6, "period": "hour"}


def test_the_no_lookahead_test_fails_on_a_feature_that_reads_a_later_hour(built_layer: BuiltLayer,
                                                                         admin_engine) -> None:
    """dbt's assert_features_use_no_future_hours names each row and feature that reads the wrong hour: a std
    taken one hour later, a lag shifted by one, a lag blanked in the first days' partial windows."""
    from sqlalchemy import text

    mart = f"`{built_layer.schemas.marts}`.fct_candle_features"
    newest, first = _frame(admin_engine, f"select max(hour) as newest, min(hour) as first from {mart}").iloc[0]
    later_std, shifted_lag, blank_lag = newest - timedelta(hours=5), newest - timedelta(hours=7), \
        first + timedelta(hours=30)
    keep = f"select * from {mart} where hour in (:a, :b, :c)"
    hours = {"a": later_std, "b": shifted_lag, "c": blank_lag}
    with admin_engine.begin() as conn:
        saved = conn.execute(text(keep), hours).mappings().all()
        assert len(saved) == 3
        conn.execute(text(f"update {mart} f join {mart} n on n.product_id = f.product_id "
                          "and n.hour = f.hour + interval 1 hour set f.return_std_24h = n.return_std_24h "
                          "where f.hour = :a"), hours)
        conn.execute(text(f"update {mart} set log_return_1h_lag_24 = log_return_1h_lag_23 where hour = :b"), hours)
        conn.execute(text(f"update {mart} set log_return_1h_lag_24 = null where hour = :c"), hours)
    try:
        run = run_dbt("test", select=("assert_features_use_no_future_hours",), base=BASE, name="lookahead",
                      check=False)
        [result] = run.artifact("run_results.json")["results"]
        assert (result["status"], result["failures"]) == ("fail", 3), result
        # the hourly builds test the hours they rewrote: the two recent leaks, not the one in the first days
        run = run_dbt("test", select=("assert_features_use_no_future_hours",), base=BASE, name="lookahead-recent",
                      args=("--vars", '{"tests_scope": "recent"}'), check=False)
        [result] = run.artifact("run_results.json")["results"]
        assert (result["status"], result["failures"]) == ("fail", 2), result
    finally:
        with admin_engine.begin() as conn:
            for row in saved:
                columns = [c for c in row.keys() if c not in ("product_id", "hour")]
                conn.execute(text(f"update {mart} set " + ", ".join(f"`{c}` = :{c}" for c in columns)
                                  + " where product_id = :product_id and hour = :hour"), dict(row))
    assert run_dbt("test", select=("assert_features_use_no_future_hours",), base=BASE, name="lookahead-restored") \
        .artifact("run_results.json")["results"][0]["status"] == "pass"


def test_the_hourly_builds_generic_tests_read_the_hours_an_incremental_run_rewrites(built_layer: BuiltLayer,
                                                                                     admin_engine) -> None:
    """With ``tests_scope: recent`` (the hourly builds) a test of the feature mart sees a NULL close in the newest
    hours and not one in the first week; the weekly build's tests (every row) see both."""
    from sqlalchemy import text

    mart = f"`{built_layer.schemas.marts}`.fct_candle_features"
    newest, first = _frame(admin_engine, f"select max(hour) as newest, min(hour) as first from {mart}").iloc[0]
    hours = {"recent": newest - timedelta(hours=3), "old": first + timedelta(hours=100)}
    with admin_engine.begin() as conn:
        saved = {k: conn.execute(text(f"select close from {mart} where hour = :h"), {"h": h}).scalar_one()
                 for k, h in hours.items()}
        conn.execute(text(f"update {mart} set close = null where hour in (:recent, :old)"), hours)
    try:
        failures = {}
        for scope in ("recent", "all"):
            run = run_dbt("test", select=("not_null_fct_candle_features_close",), base=BASE, name=f"scope-{scope}",
                          args=("--vars", f'{{"tests_scope": "{scope}"}}'), check=False)
            [result] = run.artifact("run_results.json")["results"]
            failures[scope] = result["failures"]
        assert failures == {"recent": 1, "all": 2}
    finally:
        with admin_engine.begin() as conn:
            for k, h in hours.items():
                conn.execute(text(f"update {mart} set close = :c where hour = :h"), {"c": saved[k], "h": h})


def test_marts_and_spine_have_their_primary_key_and_indexes(built_layer: BuiltLayer, admin_engine) -> None:
    s = built_layer.schemas
    expected = {
        f"{s.marts}.fct_candle_features": {
            "PRIMARY": ["product_id", "hour"],
            "ix_fct_candle_features_hour": ["hour"],
            "ix_fct_candle_features_complete": ["is_complete", "product_id", "hour"],
            "ix_fct_candle_features_forecastable": ["is_forecastable", "product_id", "hour"],
        },
        f"{s.intermediate}.int_candles__hourly_spine": {"PRIMARY": ["product_id", "hour"]},
    }
    for table, indexes in expected.items():
        shown = _frame(admin_engine, f"show index from {table}")
        actual = {
            name: list(group.sort_values("Seq_in_index")["Column_name"])
            for name, group in shown.groupby("Key_name")
        }
        assert actual == indexes, table
        assert (shown.loc[shown["Key_name"] == "PRIMARY", "Non_unique"] == 0).all()


def test_feature_mart_has_exactly_the_contracted_columns(built_layer: BuiltLayer, admin_engine) -> None:
    columns = _frame(admin_engine, f"show columns from {built_layer.schemas.marts}.fct_candle_features")
    assert tuple(columns["Field"]) == FEATURE_COLUMNS
    latest = _frame(admin_engine, f"show columns from {built_layer.schemas.marts}.features_latest")
    assert tuple(latest["Field"]) == FEATURE_COLUMNS


def test_spine_keeps_missing_hours_with_close_carried_and_zero_volume(built_layer: BuiltLayer, admin_engine) -> None:
    s = built_layer.schemas
    spine = _frame(admin_engine, f"select * from {s.intermediate}.int_candles__hourly_spine order by hour")
    # 18,164 candles + the 4 hours the API left out, every hour from the first to the last exactly once
    assert len(spine) == 18_168
    assert spine["hour"].iloc[0] == datetime(2021, 12, 14) and spine["hour"].iloc[-1] == datetime(2024, 1, 9, 23)
    assert (spine["hour"].diff().dropna() == timedelta(hours=1)).all()
    missing = spine[spine["is_missing_hour"] == 1]
    assert list(missing["hour"]) == GAP
    last_real_close = spine.loc[spine["hour"] == datetime(2023, 3, 4, 16), "close"].item()
    for column in ("open", "high", "low", "close"):
        assert (missing[column] == last_real_close).all()
    assert (missing["volume"] == 0).all()
    assert list(spine["hours_since_first_candle"]) == list(range(18_168))


def _reference_features(candles: pd.DataFrame) -> pd.DataFrame:
    """The contract's definitions computed independently in pandas, from the raw candles."""
    hours = pd.date_range(candles["hour"].min(), candles["hour"].max(), freq="h")
    f = candles.set_index("hour").reindex(hours)
    f["is_missing_hour"] = f["close"].isna().astype(int)
    f["close"] = f["close"].ffill()
    for column in ("open", "high", "low"):
        f[column] = f[column].fillna(f["close"])
    f["volume"] = f["volume"].fillna(0.0)
    c, v = f["close"], f["volume"]
    missing = f["is_missing_hour"]
    # a feature that would read a missing hour's filled-in close or volume is NULL
    real = missing == 0
    r = np.log(c / c.shift(1)).where(real & (missing.shift(1) == 0))
    out = pd.DataFrame(index=hours)
    for k in (1, 2, 3, 6, 12, 24, 168):
        out[f"log_return_{k}h"] = np.log(c / c.shift(k)).where(real & (missing.shift(k) == 0))
    for k in range(1, 25):
        out[f"log_return_1h_lag_{k}"] = r.shift(k)
    # pandas' rolling windows are NaN as soon as one value is: a missing hour blanks them
    for n in (6, 24, 72, 168):
        out[f"return_mean_{n}h"] = r.rolling(n).mean()
    for n in (6, 24, 72, 168):
        out[f"return_std_{n}h"] = r.rolling(n).std(ddof=1)
    for n in (24, 168):
        out[f"realized_vol_{n}h"] = np.sqrt((r * r).rolling(n).sum())
    out["hl_range"] = ((f["high"] - f["low"]) / c).where(real)
    out["close_position_in_range"] = ((c - f["low"]) / (f["high"] - f["low"])).where(f["high"] > f["low"])
    observed_volume = v.where(real)
    for n in (24, 168):
        std = observed_volume.rolling(n).std(ddof=1)
        out[f"volume_zscore_{n}h"] = ((v - observed_volume.rolling(n).mean()) / std).where(std > 0)
    out["hour_of_day"] = hours.hour
    out["day_of_week"] = hours.dayofweek + 1
    index = np.arange(len(hours))
    no_missing_in_window = missing.rolling(169, min_periods=1).sum() == 0
    out["is_complete"] = ((index >= 168) & no_missing_in_window).astype(int)
    out["is_forecastable"] = ((index >= 168) & real).astype(int)
    next_real = missing.shift(-1) == 0
    out["target_close_1h"] = c.shift(-1).where(next_real)
    out["target_log_return_1h"] = np.log(c.shift(-1) / c).where(next_real)
    out["is_missing_hour"] = missing
    return out


def test_every_feature_equals_an_independent_pandas_computation(built_layer: BuiltLayer, admin_engine) -> None:
    s = built_layer.schemas
    candles = _frame(admin_engine, f"select bucket_start as hour, open, high, low, close, volume "
                                   f"from {s.raw}.candles where product_id = 'BTC-USD' order by bucket_start")
    for column in ("open", "high", "low", "close", "volume"):
        candles[column] = candles[column].astype(float)
    expected = _reference_features(candles)
    mart = _frame(admin_engine, f"select * from {s.marts}.fct_candle_features order by hour").set_index("hour")
    assert list(mart.index) == list(expected.index)
    compared = 0
    for column in expected.columns:
        got = pd.to_numeric(mart[column].astype(object), errors="coerce").astype(float).to_numpy()
        want = expected[column].astype(float).to_numpy()
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"{column}: NULLs differ"
        both = ~np.isnan(want)
        assert np.allclose(got[both], want[both], rtol=1e-9, atol=1e-12), f"{column}: values differ"
        compared += int(both.sum())
    assert compared > 18_000 * 50  # most cells are real numbers, so the comparison means something
    assert mart["is_complete"].sum() > 17_000


def test_a_gap_blanks_only_the_features_whose_windows_hold_it(built_layer: BuiltLayer, admin_engine) -> None:
    s = built_layer.schemas
    mart = _frame(admin_engine, f"select * from {s.marts}.fct_candle_features where hour between "
                                f"'2023-03-04 12:00' and '2023-03-12 12:00' order by hour").set_index("hour")
    after_gap = mart.loc[datetime(2023, 3, 5, 3)]  # 7 h after the last missing hour (2023-03-04 20:00)
    # every real candle after the warm-up is forecastable; analysts' is_complete still says "a window has a gap"
    real = mart[mart["is_missing_hour"] == 0]
    assert (real["is_forecastable"] == 1).all() and (mart.loc[GAP, "is_forecastable"] == 0).all()
    assert after_gap["is_complete"] == 0
    # short windows past the gap are whole again; the long ones that hold it are NULL
    # (a 12 h return reads two real closes, 03-04 15:00 and now: the gap between them does not matter)
    for column in ("log_return_1h", "log_return_3h", "log_return_12h", "return_mean_6h", "log_return_1h_lag_5",
                   "hl_range"):
        assert after_gap[column] is not None and not pd.isna(after_gap[column]), column
    for column in ("log_return_1h_lag_8", "return_mean_24h", "return_std_24h", "realized_vol_168h",
                   "volume_zscore_168h"):
        assert pd.isna(after_gap[column]), column
    # 169 hours after the first missing hour every window is whole again
    assert mart.loc[datetime(2023, 3, 11, 21), "is_complete"] == 1
    assert mart.loc[datetime(2023, 3, 11, 20), "is_complete"] == 0


def test_features_latest_is_the_newest_forecastable_row_per_product(built_layer: BuiltLayer, admin_engine) -> None:
    s = built_layer.schemas
    latest = _frame(admin_engine, f"select * from {s.marts}.features_latest")
    assert list(latest["product_id"]) == ["BTC-USD"]
    newest = _frame(admin_engine, f"select * from {s.marts}.fct_candle_features where is_forecastable = 1 "
                                  f"order by hour desc limit 1")
    assert latest.iloc[0]["hour"] == newest.iloc[0]["hour"] == datetime(2024, 1, 9, 23)
    row = latest.iloc[0]
    assert row["is_forecastable"] == 1 and row["target_close_1h"] is None
    # far from the 2023 gap every window is whole: every feature is there
    assert row["is_complete"] == 1
    assert not any(isinstance(row[c], float) and math.isnan(row[c]) for c in FEATURE_COLUMNS)


def test_reader_can_select_the_marts_and_nothing_else(built_layer: BuiltLayer) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    from candlecast.db import engine_for

    s = built_layer.schemas
    reader = engine_for("reader")
    try:
        with reader.connect() as conn:
            assert conn.execute(text(f"select count(*) from {s.marts}.fct_candle_features")).scalar() == 18_168
            assert conn.execute(text(f"select count(*) from {s.marts}.features_latest")).scalar() == 1
        denied = [
            f"select 1 from {s.staging}.stg_coinbase__candles limit 1",
            f"select 1 from {s.intermediate}.int_candles__hourly_spine limit 1",
            f"select 1 from {s.raw}.candles limit 1",
            f"delete from {s.marts}.fct_candle_features where hour < '2000-01-01'",
            f"update {s.marts}.fct_candle_features set close = 0 where hour < '2000-01-01'",
            f"create table {s.marts}.reader_scratch (x int)",
        ]
        for statement in denied:
            with pytest.raises(DatabaseError, match=r"denied"), reader.begin() as conn:
                conn.execute(text(statement))
    finally:
        reader.dispose()


def test_every_model_and_mart_column_is_documented(built_layer: BuiltLayer) -> None:
    manifest = built_layer.docs.artifact("manifest.json")
    catalog = built_layer.docs.artifact("catalog.json")
    models = {k: v for k, v in manifest["nodes"].items() if k.startswith("model.candlecast.")}
    feature_layer = {f"model.candlecast.{m}" for m in
                     ("stg_coinbase__candles", "int_candles__hourly_spine", "fct_candle_features", "features_latest")}
    assert feature_layer <= set(models)
    assert feature_layer <= set(catalog["nodes"]), "the feature layer's relations are missing from catalog.json"
    undocumented = []
    for unique_id, node in models.items():
        if not node["description"].strip():
            undocumented.append(unique_id)
        # every column of every built relation (the catalog: what is really in the database)
        for column in catalog["nodes"].get(unique_id, {}).get("columns", {}):
            described = node["columns"].get(column.lower(), {}).get("description", "").strip()
            if not described:
                undocumented.append(f"{unique_id}.{column}")
    assert undocumented == []
    marts = {k for k in models if models[k]["schema"].endswith("_marts")}
    assert {"model.candlecast.fct_candle_features", "model.candlecast.features_latest"} <= marts
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert {"ml_weekly_training", "ml_hourly_inference", "sql_consumers", "read_api", "dashboard"} <= set(exposures)
    assert "model.candlecast.fct_candle_features" in exposures["ml_weekly_training"]["depends_on"]["nodes"]


def test_the_docs_site_opens_on_the_project_and_every_model_has_an_owning_group(built_layer: BuiltLayer) -> None:
    manifest = built_layer.docs.artifact("manifest.json")
    # dbt docs shows the root project's `__overview__` block instead of its "Welcome" page
    overview = manifest["docs"]["doc.candlecast.__overview__"]["block_contents"]
    assert overview.startswith("# candlecast")
    assert all(part in overview for part in ("## The layers", "## How to query", "features_latest", "reader"))
    owners = {g["name"]: g["owner"]["name"] for g in manifest["groups"].values()}
    assert owners == {"market_data": "candlecast data", "forecasting": "candlecast ML"}
    layers = {"staging", "intermediate", "marts"}
    models = {n["name"]: n for k, n in manifest["nodes"].items() if k.startswith("model.candlecast.")}
    unowned = {name: (n["group"], n["config"]["meta"].get("owner"), n["tags"]) for name, n in models.items()
               if n["group"] not in owners or n["config"]["meta"].get("owner") != owners[n["group"]]
               or len(layers & set(n["tags"])) != 1}
    assert unowned == {}
    hourly = {name for name, n in models.items() if "hourly" in n["tags"]}
    assert hourly == {"stg_coinbase__candles", "int_candles__hourly_spine", "fct_candle_features", "features_latest",
                      "fct_prediction_accuracy", "fct_model_accuracy_monthly", "model_leaderboard",
                      "fct_forecast_outcomes", "product_health"}
