"""Feature lineage from the dbt SQL: a model trained before a feature macro changed is skipped, with the reason
recorded, by evaluation (so promotion) and by the hourly step; a model trained after it serves.

The macro is really edited, in a copy of the dbt project that dbt re-parses (``dbt parse``: no database), and the
manifest it writes is what the ML code reads. The feature mart itself is not rebuilt: the lineage says which SQL
computes the features, whatever the numbers.
"""

from __future__ import annotations

import copy
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from candlecast import dbt_runner
from candlecast.settings.dbt import DBT_PROJECT_DIR, DbtSettings
from ml.evaluate import SKIPPED, evaluate
from ml.lineage import FeatureLineage, lineage_from_manifest, read_lineage
from ml.model import LIGHTGBM
from ml.predict import FALLBACK, MODEL, STALE_MODEL, StaleModel, forecast_hour, predict_range
from ml.registry import switch_production
from ml.store import ModelStore
from ml.train import train
from tests.ml.conftest import MlDb, current_lineage, small_config

PRODUCT = "BTC-USD"
WINDOW_END = datetime(2024, 1, 9, 23)
CUTOFF = WINDOW_END - timedelta(hours=168)
HOUR = datetime(2024, 1, 9, 20)  # a forecastable feature hour after both training cutoffs


def _parse(project: Path, target: Path) -> FeatureLineage:
    settings = DbtSettings(project_dir=project)
    dbt_runner.run_dbt(["parse"], env=os.environ, settings=settings, target_path=target, log_path=target / "logs",
                       timeout=300)
    return read_lineage(target / "manifest.json")


def test_the_hash_is_the_models_checksums_and_the_macros_they_call_not_paths_or_times() -> None:
    def manifest(stddev_sql: str) -> dict:
        macro = {"package_name": "p", "depends_on": {"macros": []}}
        return {
            "metadata": {"project_name": "p", "adapter_type": "mariadb", "generated_at": "2026-01-01T00:00:00Z",
                         "invocation_id": "a", "dbt_version": "1.7.20"},
            "nodes": {
                "model.p.fct_candle_features": {"checksum": {"checksum": "c1"}, "path": "a/fct.sql",
                                                "raw_code": "{% if is_incremental() %}{{ filt() }}{% endif %}",
                                                "depends_on": {"nodes": ["model.p.spine"],
                                                               "macros": ["macro.p.sums", "macro.dbt.is_incremental"]}},
                "model.p.features_latest": {"checksum": {"checksum": "c2"}, "depends_on": {"nodes": [], "macros": []}},
                "model.p.spine": {"checksum": {"checksum": "c3"}, "depends_on": {"nodes": ["source.p.raw"]}},
                "model.p.unrelated": {"checksum": {"checksum": "c4"}, "depends_on": {"nodes": []}},
            },
            "macros": {
                "macro.p.sums": {**macro, "name": "sums", "macro_sql": "sum",
                                 "depends_on": {"macros": ["macro.p.std"]}},
                "macro.p.std": {**macro, "name": "std", "macro_sql": stddev_sql},
                "macro.p.filt": {**macro, "name": "filt", "macro_sql": "1 = 1"},
                "macro.p.unused": {**macro, "name": "unused", "macro_sql": "x"},
                "macro.dbt.is_incremental": {"package_name": "dbt", "name": "is_incremental", "macro_sql": "dbt's"},
            },
        }

    base = lineage_from_manifest(manifest("sqrt(var)"))
    assert set(base.models) == {"model.p.fct_candle_features", "model.p.features_latest", "model.p.spine"}
    # called directly, through another macro, or only in a branch dbt's parse does not take; dbt's own left out
    assert set(base.macros) == {"macro.p.sums", "macro.p.std", "macro.p.filt"}
    moved = manifest("sqrt(var)")
    moved["metadata"].update(generated_at="2027-05-05T05:05:05Z", invocation_id="b", dbt_version="1.7.21")
    moved["nodes"]["model.p.fct_candle_features"]["path"] = "elsewhere/fct.sql"
    moved["nodes"]["model.p.unrelated"]["checksum"]["checksum"] = "changed"
    moved["macros"]["macro.p.unused"]["macro_sql"] = "changed"
    moved["macros"]["macro.dbt.is_incremental"]["macro_sql"] = "changed"
    assert lineage_from_manifest(moved).hash == base.hash
    changed = lineage_from_manifest(manifest("sqrt(var * n / (n - 1))"))
    assert changed.hash != base.hash and changed.differences(base.as_metadata()) == ["p.std"]
    spine = copy.deepcopy(manifest("sqrt(var)"))
    spine["nodes"]["model.p.spine"]["checksum"]["checksum"] = "c3'"
    assert lineage_from_manifest(spine).hash != base.hash


def _outcome(db: MlDb, hour: datetime) -> tuple:
    with db.engine.connect() as conn:
        return tuple(conn.execute(text(f"select outcome, model_version, reason_code, reason from {db.schemas.ml}."
                                       "forecast_outcomes where product_id = :p and target_hour = :t"),
                                  {"p": PRODUCT, "t": hour + timedelta(hours=1)}).one())


@pytest.mark.integration
def test_a_changed_feature_macro_retires_older_models_and_a_newly_trained_one_serves(
        ml_db: MlDb, clean_ml_tables: None, tmp_path: Path) -> None:
    engine, schemas, store = ml_db.engine, ml_db.schemas, ModelStore(tmp_path / "models")
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    before = _parse(project, tmp_path / "before")
    assert before == current_lineage()  # a copy elsewhere hashes as the project: no path, no time in it

    old = train(engine, schemas, store, PRODUCT, CUTOFF - timedelta(days=7), small_config(),
                lineage=before).versions[LIGHTGBM]
    switch_production(engine, schemas, PRODUCT, old, (CUTOFF, WINDOW_END), {}, "test: the old LightGBM serves")
    forecast_hour(engine, schemas, store, PRODUCT, HOUR, lineage=before)
    assert _outcome(ml_db, HOUR)[:2] == (MODEL, old)

    # the rolling standard deviation becomes the population one: every return_std_* feature changes meaning
    macros = project / "macros" / "window_features.sql"
    sql = macros.read_text()
    assert sql.count("/ {{ rows - 1 }},") == 1
    macros.write_text(sql.replace("/ {{ rows - 1 }},", "/ {{ rows }},"))
    after = _parse(project, tmp_path / "after")
    assert after.hash != before.hash and after.differences(before.as_metadata()) == ["candlecast.rolling_stddev"]

    report = evaluate(engine, schemas, store, PRODUCT, WINDOW_END, lineage=after)
    skipped = {r.version: r.reason or "" for r in report.skipped}
    assert list(skipped) == [old] and "feature lineage changed since training" in skipped[old]
    assert "candlecast.rolling_stddev" in skipped[old]
    assert {r.kind for r in report.scored} == {"naive_persistence", "naive_drift"}  # baselines read no features
    with engine.connect() as conn:
        recorded = conn.execute(text(f"select status, reason from {schemas.ml}.model_evaluations "
                                     "where model_version = :v"), {"v": old}).one()
    assert recorded[0] == SKIPPED and "candlecast.rolling_stddev" in recorded[1]

    # the hourly step serves a labelled fallback instead of the stale model; a strict backfill refuses
    outcome = forecast_hour(engine, schemas, store, PRODUCT, HOUR, lineage=after)
    assert (outcome.outcome, outcome.reason_code) == (FALLBACK, STALE_MODEL)
    status, version, code, reason = _outcome(ml_db, HOUR)
    assert (status, version, code) == (FALLBACK, None, STALE_MODEL) and old in reason
    assert "candlecast.rolling_stddev" in reason
    with pytest.raises(StaleModel, match=f"{PRODUCT}: model {old}: feature lineage changed"):
        predict_range(engine, schemas, store, PRODUCT, HOUR, HOUR + timedelta(hours=1), lineage=after)

    new = train(engine, schemas, store, PRODUCT, CUTOFF, small_config(), lineage=after).versions[LIGHTGBM]
    assert store.metadata(new)["feature_hash"] == after.hash
    assert new in {r.version for r in evaluate(engine, schemas, store, PRODUCT, WINDOW_END, lineage=after).scored}
    switch_production(engine, schemas, PRODUCT, new, (CUTOFF, WINDOW_END), {}, "test: the new LightGBM serves")
    assert forecast_hour(engine, schemas, store, PRODUCT, HOUR, lineage=after).outcome == MODEL
    assert _outcome(ml_db, HOUR)[:3] == (MODEL, new, None)
