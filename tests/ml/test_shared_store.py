"""The shared model store: a model trained on one machine (one local cache folder) loads on another (another
folder), every cached file checked against the sha256 the database publishes."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ml.model import PERSISTENCE, ConstantForecaster
from ml.predict import ModelCache, predict_hour
from ml.registry import switch_production
from ml.shared_store import SharedStoreError, StoreDatabase
from ml.store import ModelStore, StoreError
from ml.train import train
from tests.ml.conftest import MlDb, current_lineage, small_config

pytestmark = pytest.mark.integration

PRODUCT = "BTC-USD"
WINDOW_END = datetime(2024, 1, 9, 23)
CUTOFF = WINDOW_END - timedelta(hours=168)


def _machine(db: MlDb, folder: Path) -> ModelStore:
    """The store as one worker machine sees it: the shared database, its own cache folder."""
    return ModelStore(folder, StoreDatabase(db.engine, db.schemas))


def _baseline(point: float = 0.0) -> ConstantForecaster:
    return ConstantForecaster(PERSISTENCE, point, -0.01, 0.01)


def _meta() -> dict[str, object]:
    return {"product": PRODUCT, "training_cutoff": CUTOFF, "trained_at": CUTOFF, "feature_hash": current_lineage().hash,
            "row_count": {"train": 1, "valid": 1}}


def test_a_model_trained_on_one_machine_forecasts_on_another(ml_db: MlDb, clean_ml_tables: None,
                                                             tmp_path: Path) -> None:
    engine, schemas = ml_db.engine, ml_db.schemas
    trainer, predictor = _machine(ml_db, tmp_path / "machine-a"), _machine(ml_db, tmp_path / "machine-b")
    trained = train(engine, schemas, trainer, PRODUCT, CUTOFF, small_config(), lineage=current_lineage())
    version = trained.versions["lightgbm"]
    switch_production(engine, schemas, PRODUCT, version, (CUTOFF, WINDOW_END), {}, "tests/ml/test_shared_store.py")

    hour = WINDOW_END - timedelta(hours=1)
    served = predict_hour(engine, schemas, predictor, PRODUCT, hour, ModelCache(), lineage=current_lineage())
    assert served.model_version == version
    # machine B fetched the production model and its two shadows, byte for byte what machine A wrote
    assert sorted(p.name for p in predictor.root.iterdir()) == sorted(trained.versions.values())
    for name in ("model.txt", "quantile_10.txt", "quantile_90.txt", "metadata.json"):
        assert (predictor.root / version / name).read_bytes() == (trainer.root / version / name).read_bytes()
    # and forecasts what machine A forecasts
    assert predict_hour(engine, schemas, trainer, PRODUCT, hour, ModelCache(), lineage=current_lineage()) == served


def test_a_corrupt_or_missing_cache_file_is_fetched_again(ml_db: MlDb, clean_ml_tables: None, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    version = _machine(ml_db, tmp_path / "machine-a").save(_baseline(), _meta())
    folder = tmp_path / "machine-b"
    _machine(ml_db, folder).load(version)
    cached = folder / version / "baseline.json"
    original = cached.read_bytes()

    cached.write_bytes(original.replace(b"0.01", b"0.5"))
    with caplog.at_level(logging.WARNING, logger="ml.store"):
        assert _machine(ml_db, folder).load(version).forecaster == _baseline()
    assert cached.read_bytes() == original
    assert f"model {version}: cached {cached} fails its sha256" in caplog.text

    (folder / version / "metadata.json").unlink()
    assert _machine(ml_db, folder).metadata(version)["version"] == version
    assert (folder / version / "metadata.json").is_file()


def test_a_file_changed_in_the_database_fails_its_checksum(ml_db: MlDb, clean_ml_tables: None, tmp_path: Path) -> None:
    version = _machine(ml_db, tmp_path / "machine-a").save(_baseline(), _meta())
    with ml_db.admin.begin() as conn:
        conn.execute(text(f"update `{ml_db.schemas.ml}`.model_store_files set content = '{{}}' "
                          "where model_version = :v and file_name = 'baseline.json'"), {"v": version})
    with pytest.raises(StoreError, match=f"model {version}: baseline.json as stored in .* fails its sha256"):
        _machine(ml_db, tmp_path / "machine-b").load(version)


def test_publication_is_once_per_version_and_a_cut_short_one_is_finished_by_the_next_reader(
        ml_db: MlDb, clean_ml_tables: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine_a, machine_b = _machine(ml_db, tmp_path / "machine-a"), _machine(ml_db, tmp_path / "machine-b")
    version = machine_a.save(_baseline(), _meta())
    assert machine_b.save(_baseline(), _meta()) == version  # the same model trained again elsewhere: no new version
    with ml_db.admin.connect() as conn:
        assert conn.execute(text(f"select count(*) from `{ml_db.schemas.ml}`.model_store_versions")).scalar() == 1
    with pytest.raises(SharedStoreError, match=r"is published in .* with checksum"):
        StoreDatabase(ml_db.engine, ml_db.schemas).publish(version, PRODUCT, "0" * 64, {"baseline.json": b"{}"})

    # machine A dies between writing its folder and publishing it: nobody else sees the version yet
    def cut(*args: object) -> bool:
        raise SharedStoreError("connection lost")

    monkeypatch.setattr(StoreDatabase, "publish", cut)
    with pytest.raises(SharedStoreError, match="connection lost"):
        machine_a.save(_baseline(0.001), _meta())
    monkeypatch.undo()
    unpublished = next(p.name for p in machine_a.root.iterdir() if p.name != version)
    assert machine_b.versions(PRODUCT) == [version]
    with pytest.raises(StoreError, match=f"model {unpublished} is not in the store"):
        machine_b.load(unpublished)
    # machine A's next read of it (its predict, its evaluation) publishes it from the folder
    assert machine_a.load(unpublished).forecaster == _baseline(0.001)
    assert machine_b.load(unpublished).forecaster == _baseline(0.001)
