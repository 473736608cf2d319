"""Both DAGs end to end with ``dag.test()``: real Airflow, Cosmos running dbt, the tests' MariaDB, the replay server.

The reference is the same hours run directly (``tests/dags/pipeline.py``) into a second base: after the
weekly retrain and one hourly interval, every table of the DAG base (raw, staging, features, predictions,
registry, accuracy marts) must hold exactly what the direct run's does.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

import pytest

from candlecast.hours import HOUR
from tests.dags import pipeline
from tests.dags.conftest import BASE, DIRECT_BASE, HOURLY_START, run_dag

pytestmark = pytest.mark.integration


def test_weekly_run_trains_evaluates_and_promotes_on_the_last_week(weekly_run, admin_engine) -> None:
    from sqlalchemy import text

    assert weekly_run.data_interval_start.isoformat() == "2023-12-31T23:30:00+00:00"
    assert weekly_run.data_interval_end.isoformat() == "2024-01-07T23:30:00+00:00"
    with admin_engine.connect() as conn:
        cutoffs = conn.execute(text(f"select distinct training_cutoff from `{BASE}_ml`.model_registry")).scalars().all()
        production = conn.execute(
            text(f"select kind from `{BASE}_ml`.model_registry where status = 'production'")).scalars().all()
        windows = conn.execute(
            text(f"select window_start, window_end from `{BASE}_ml`.model_promotions")).all()
    # Trained before the holdout week, which every stored model is then scored on.
    assert cutoffs == [datetime(2023, 12, 31, 23)]
    assert len(production) == 1
    assert [tuple(w) for w in windows] == [(datetime(2023, 12, 31, 23), datetime(2024, 1, 7, 23))]


def test_hourly_run_stores_what_a_direct_run_of_the_same_hours_does(hourly_run, admin_engine) -> None:
    from sqlalchemy import text

    assert hourly_run.data_interval_start.isoformat() == "2024-01-08T12:00:00+00:00"
    assert hourly_run.data_interval_end.isoformat() == "2024-01-08T13:00:00+00:00"
    dag_tables = pipeline.snapshot(admin_engine, BASE)
    direct_tables = pipeline.snapshot(admin_engine, DIRECT_BASE)
    assert pipeline.differences(dag_tables, direct_tables) == []
    with admin_engine.connect() as conn:
        newest = conn.execute(text(f"select max(bucket_start) from `{BASE}_raw`.candles")).scalar()
        target = conn.execute(text(f"select target_hour from `{BASE}_ml`.predictions "
                                   "where role = 'production'")).scalars().all()
        accuracy = conn.execute(text(f"select count(*) from `{BASE}_marts`.fct_prediction_accuracy")).scalar()
    # The interval's closed hour was fetched, the forecast is for the hour the interval ends at, and the
    # accuracy marts were built over it; nothing is vacuous.
    assert newest == datetime(2024, 1, 8, 12)
    assert target == [datetime(2024, 1, 8, 13)]
    assert accuracy >= 1
    for table in ("_raw.candles", "_marts.fct_candle_features", "_ml.predictions", "_ml.model_registry"):
        assert dag_tables[table], f"{table} is empty"


def test_rerunning_hourly_tasks_with_settings_from_airflow_connections_changes_nothing(
        hourly_run, admin_engine, tmp_path, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    from candlecast.settings import db_settings
    from tests.dags.conftest import DAGS_DIR

    before = pipeline.snapshot(admin_engine, BASE)
    # The DB settings now reach the tasks only through Airflow Connections: no password in the environment,
    # no credentials file, and a schema base in the environment that does not exist.
    connections = {}
    for role in ("loader", "transformer", "ml"):
        s = db_settings(role)
        connections[f"cc_{role}"] = {"conn_type": "mysql", "host": s.host, "port": s.port, "login": s.user,
                                     "password": s.password, "schema": BASE}
    conn_file = tmp_path / "connections.json"
    conn_file.write_text(json.dumps(connections))
    for key in [k for k in os.environ if k.startswith("CANDLECAST_") and k.endswith("_PASSWORD")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CANDLECAST_CREDENTIALS_FILE", str(tmp_path / "no-such-file.env"))
    monkeypatch.setenv("CANDLECAST_DB_SCHEMA", "ct_no_such_base")
    monkeypatch.setenv("CANDLECAST_AIRFLOW_CONN_PREFIX", "cc")
    bag = BundleDagBag(dag_folder=DAGS_DIR / "candlecast_hourly.py", bundle_path=DAGS_DIR, bundle_name="dags-folder")
    assert bag.import_errors == {}

    # Re-run extract, the incremental feature model and predict for the same interval; the rest is marked done.
    keep = "product_batches|extract|predict|features\\.fct_candle_features_model_build"
    run_dag(bag.dags["candlecast_hourly"], HOURLY_START + HOUR, conn_file_path=str(conn_file),
            mark_success_pattern=f"(?!(?:{keep})$).*")
    assert pipeline.differences(pipeline.snapshot(admin_engine, BASE), before) == []
