"""The whole ML path on the bundled data: dbt features → train → evaluate → promote → 48 h of predictions →
dbt accuracy marts, plus the CLI's contract (help, one-line errors, exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from ml.evaluate import evaluate
from ml.predict import predict_range
from ml.promote import promote
from ml.store import ModelStore
from ml.train import TrainConfig, train
from tests.ml.conftest import DBT_DIR, REPO_ROOT, MlDb, current_lineage, run_dbt

pytestmark = pytest.mark.integration

PRODUCT = "BTC-USD"
NEWEST = datetime(2024, 1, 9, 23)


def _query(db: MlDb, sql: str) -> list[tuple]:
    with db.admin.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql)).all()]


def test_accuracy_marts_build_before_the_ml_tables_exist(ml_db: MlDb) -> None:
    with ml_db.admin.begin() as conn:
        for table in ("forecast_skips", "forecast_outcomes", "predictions", "model_promotions", "model_evaluations",
                      "model_registry"):
            conn.execute(text(f"drop table if exists `{ml_db.schemas.ml}`.{table}"))
        # a fresh database: no accuracy mart either (they are incremental, and would keep an earlier run's rows)
        for table in ("fct_prediction_accuracy", "fct_model_accuracy_monthly", "model_leaderboard",
                      "fct_forecast_outcomes"):
            conn.execute(text(f"drop table if exists `{ml_db.schemas.marts}`.{table}"))
    run_dbt("build", "tag:accuracy")
    assert _query(ml_db, f"select count(*) from {ml_db.schemas.marts}.fct_prediction_accuracy") == [(0,)]
    assert _query(ml_db, f"select count(*) from {ml_db.schemas.marts}.model_leaderboard") == [(0,)]
    assert _query(ml_db, f"select count(*) from {ml_db.schemas.marts}.fct_forecast_outcomes") == [(0,)]
    # keyed like the feature layer: primary keys (and the fact table's indexes) added by the post_hooks
    def index(table: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for row in _query(ml_db, f"select index_name, column_name from information_schema.statistics where "
                                 f"table_schema = '{ml_db.schemas.marts}' and table_name = '{table}' "
                                 f"order by index_name, seq_in_index"):
            out.setdefault(row[0], []).append(row[1])
        return out

    assert index("fct_prediction_accuracy") == {
        "PRIMARY": ["product_id", "target_hour", "model_version"],
        "ix_fct_prediction_accuracy_hour": ["target_hour"],
        "ix_fct_prediction_accuracy_model": ["model_version", "target_hour"],
        "ix_fct_prediction_accuracy_updated": ["updated_at"],
    }
    assert index("model_leaderboard") == {"PRIMARY": ["product_id", "model_version"]}


def test_bundled_data_end_to_end(ml_db: MlDb, clean_ml_tables: None, tmp_path: Path) -> None:
    engine, schemas, store = ml_db.engine, ml_db.schemas, ModelStore(tmp_path / "models")
    cutoff = NEWEST - timedelta(hours=168)
    trained = train(engine, schemas, store, PRODUCT, cutoff, TrainConfig(), lineage=current_lineage())
    lgbm = trained.validation["lightgbm"]
    assert lgbm["n"] == 24 * 28 and lgbm["persistence_mae"] > 0
    report = evaluate(engine, schemas, store, PRODUCT, NEWEST, lineage=current_lineage())
    assert report.window_start == cutoff and report.rows == 167 and len(report.scored) == 3
    decision = promote(engine, schemas, report)
    by_version = {r.version: r.scores for r in report.scored}
    persistence_mae = by_version[trained.versions["naive_persistence"]].mae  # type: ignore[union-attr]
    assert by_version[decision.winner].mae <= persistence_mae  # type: ignore[union-attr]

    start = NEWEST - timedelta(hours=47)
    predictions = predict_range(engine, schemas, store, PRODUCT, start, NEWEST + timedelta(hours=1),
                                lineage=current_lineage())
    assert len(predictions) == 48 and predictions[-1].target_hour == NEWEST + timedelta(hours=1)

    run_dbt("build", "tag:accuracy")
    marts = schemas.marts
    rows = _query(ml_db, f"select count(*), sum(is_realized), avg(abs_error) from {marts}.fct_prediction_accuracy "
                         "where role = 'production'")
    assert rows[0][:2] == (48, 47)  # the newest forecast's hour has not happened yet
    realized = [p for p in predictions if p.target_hour <= NEWEST]
    actual = dict(_query(ml_db, f"select hour, close from {marts}.fct_candle_features where hour > '{start}'"))
    python_mae = np.mean([abs(p.predicted_close - float(actual[p.target_hour])) for p in realized])
    assert float(rows[0][2]) == pytest.approx(python_mae, rel=1e-9)
    board = _query(ml_db, f"select model_version, status, n_realized, n_24h, n_168h, mae_all, skill_all "
                          f"from {marts}.model_leaderboard order by status = 'production' desc, model_version")
    # the two other models forecast the same 48 hours in the shadow of production
    assert board[0] == (decision.winner, "production", 47, 24, 47, pytest.approx(rows[0][2]), board[0][6])
    assert len(board) == 3 and all(row[1] == "candidate" and row[2:5] == (47, 24, 47) for row in board[1:])


def _cli(*args: str, store: Path, manifest: Path = DBT_DIR / "target" / "manifest.json"
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": "ct_ml", "CANDLECAST_MODEL_STORE": str(store),
           "CANDLECAST_DBT_MANIFEST": str(manifest)}
    return subprocess.run([sys.executable, "-m", "ml", *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=120)


def test_cli_help_and_one_line_errors(ml_db: MlDb, tmp_path: Path) -> None:
    for command in ("train", "evaluate", "promote", "predict", "forecast", "backtest"):
        result = _cli(command, "--help", store=tmp_path)
        assert result.returncode == 0 and "usage: python -m ml " + command in result.stdout
    # a product nothing was trained for (the store is shared through the database: other tests' models are there)
    result = _cli("evaluate", "--product", "ETH-USD", "--end", "2024-01-09T23:00", store=tmp_path / "empty")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "ETH-USD: no models in the store" in result.stderr
    result = _cli("evaluate", "--end", "2024-01-09T23:00", store=tmp_path, manifest=tmp_path / "none.json")
    assert result.returncode == 1 and f"dbt manifest not found at {tmp_path / 'none.json'}" in result.stderr
    assert "make dbt-parse" in result.stderr
    result = _cli("predict", "--hour", "2024-01-09T22:30", store=tmp_path)
    assert result.returncode == 2 and "not on the hour" in result.stderr
