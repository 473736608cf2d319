"""The model store: round trip, content-addressed immutability, checksums, atomic publication."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from ml import store as store_module
from ml.model import ConstantForecaster
from ml.store import ChecksumMismatch, ModelStore

REPO_ROOT = Path(__file__).resolve().parents[2]
CUTOFF = datetime(2024, 1, 2, 0)


def _meta(**extra: object) -> dict[str, object]:
    return {"product": "BTC-USD", "training_cutoff": CUTOFF, "trained_at": datetime(2024, 1, 2, 0, 5),
            "feature_hash": "0" * 64, "row_count": {"train": 10, "valid": 5}, **extra}


def _model(point: float = 0.0) -> ConstantForecaster:
    return ConstantForecaster("naive_persistence", point, -0.01, 0.01)


def test_round_trip_with_metadata(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = store.save(_model(), _meta())
    assert store.versions("BTC-USD") == [version] and store.versions("ETH-USD") == []
    loaded = store.load(version)
    assert loaded.forecaster == _model()
    meta = loaded.metadata
    assert meta["version"] == version and meta["kind"] == "naive_persistence"
    assert meta["training_cutoff"] == "2024-01-02T00:00:00"
    assert set(meta["library_versions"]) >= {"lightgbm", "numpy", "pandas", "python"}
    assert "code_revision" in meta and len(meta["checksum"]) == 64
    assert not any(p.name.endswith(".pkl") for p in (tmp_path / version).iterdir())


def test_saving_the_same_model_again_writes_nothing_and_another_model_gets_another_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = store.save(_model(), _meta())
    mtime = (tmp_path / first / "metadata.json").stat().st_mtime_ns
    assert store.save(_model(), _meta(trained_at=datetime(2024, 1, 3))) == first
    assert (tmp_path / first / "metadata.json").stat().st_mtime_ns == mtime
    other = store.save(_model(0.001), _meta())
    assert other != first and len(store.versions()) == 2


def test_a_modified_model_file_fails_its_checksum(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = store.save(_model(), _meta())
    path = tmp_path / version / "baseline.json"
    body = json.loads(path.read_text())
    body["point_return"] = 0.5
    path.write_text(json.dumps(body))
    with pytest.raises(ChecksumMismatch, match=f"model {version}: checksum of baseline.json"):
        store.load(version)


def test_a_failure_before_the_rename_leaves_no_version_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    def crash(tmp: Path, final: Path) -> None:
        assert (tmp / "metadata.json").exists()  # everything was written; only the commit point fails
        raise OSError("disk gone")

    monkeypatch.setattr(store_module, "_publish", crash)
    store = ModelStore(tmp_path)
    with pytest.raises(OSError, match="disk gone"):
        store.save(_model(), _meta())
    assert store.versions() == [] and list(tmp_path.iterdir()) == []


WRITER = """
import sys, time
from datetime import datetime
from pathlib import Path
from ml import store as s
from ml.model import ConstantForecaster

def hang(tmp, final):
    Path(sys.argv[2]).write_text("ready")
    time.sleep(60)

s._publish = hang
s.ModelStore(sys.argv[1]).save(ConstantForecaster("naive_persistence", 0.0, -0.01, 0.01),
    {"product": "BTC-USD", "training_cutoff": datetime(2024, 1, 2), "trained_at": datetime(2024, 1, 2),
     "feature_hash": "0" * 64})
"""


def test_a_writer_killed_mid_write_leaves_no_visible_version(tmp_path: Path) -> None:
    root, ready = tmp_path / "store", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(ready)], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never reached the commit point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = ModelStore(root)
    assert store.versions() == []
    leftovers = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1  # invisible to readers, and cleaned up by remove_stale_temp
    assert store.remove_stale_temp(older_than_s=0) == leftovers
    version = store.save(_model(), _meta())  # the next writer succeeds
    assert store.versions() == [version]
