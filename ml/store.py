"""The model store: one immutable folder per model version, written atomically.

    <store>/<version>/model.txt, quantile_10.txt, quantile_90.txt   (LightGBM native text) or baseline.json
    <store>/<version>/metadata.json                                  (what, when, on which data, checksums)

A version is first written into a hidden temp folder in the same directory and then renamed into place
(``os.rename`` is atomic on one filesystem), so a crash mid-write leaves no visible version, only a
``.tmp-*`` folder that ``remove_stale_temp`` clears. The version name ends in a prefix of the files'
checksum, so re-saving the same model is a no-op, and ``load`` re-hashes the files and refuses a
folder whose content no longer matches its metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from candlecast.inputs import product_id
from ml.model import Forecaster, forecaster_from_files

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
TEMP_PREFIX = ".tmp-"


class StoreError(RuntimeError):
    """A version is missing, unreadable, or its files fail their checksum."""


class ChecksumMismatch(StoreError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    version: str
    metadata: dict[str, Any]
    forecaster: Forecaster

    @property
    def kind(self) -> str:
        return str(self.metadata["kind"])


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def combined_checksum(file_hashes: dict[str, str]) -> str:
    payload = "\n".join(f"{name}:{digest}" for name, digest in sorted(file_hashes.items()))
    return hashlib.sha256(payload.encode()).hexdigest()


@functools.cache
def code_revision() -> str | None:
    """The git commit of the code that trained a model, when the code runs from a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def library_versions() -> dict[str, str]:
    import lightgbm
    import numpy
    import pandas

    return {"python": platform.python_version(), "lightgbm": lightgbm.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__}


def version_name(product: str, cutoff: datetime, kind: str, checksum: str) -> str:
    # Sorting by name sorts by product, then training cutoff; the checksum prefix makes it content-addressed.
    return f"{product.lower()}-{cutoff:%Y%m%dT%H%M}Z-{kind}-{checksum[:12]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _publish(tmp: Path, final: Path) -> None:
    """The commit point: until this rename the version does not exist for any reader."""
    os.rename(tmp, final)


class ModelStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # --- writing ---------------------------------------------------------------------------------

    def save(self, forecaster: Forecaster, metadata: dict[str, Any]) -> str:
        """Store a model; ``metadata`` needs at least ``product`` and ``training_cutoff`` (a datetime).

        Returns the version. Saving a model whose files are identical to a stored one of the same
        product, cutoff and kind returns the existing version and writes nothing.
        """
        # The product names the version's folder: a '/' or '..' would put it outside the store.
        product_id(str(metadata["product"]), "the model's metadata")
        files = forecaster.files()
        hashes = {name: sha256_text(text) for name, text in files.items()}
        checksum = combined_checksum(hashes)
        cutoff = metadata["training_cutoff"]
        if not isinstance(cutoff, datetime):
            raise StoreError(f"training_cutoff must be a datetime, got {cutoff!r}")
        version = version_name(str(metadata["product"]), cutoff, forecaster.kind, checksum)
        final = self.root / version
        if final.exists():
            log.info("model %s already stored; nothing written", version)
            return version
        meta = {
            **_jsonable(metadata),
            "version": version,
            "kind": forecaster.kind,
            "features": list(forecaster.features),
            "files": hashes,
            "checksum": checksum,
            "library_versions": library_versions(),
            "code_revision": code_revision(),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TEMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for name, text in files.items():
                _write_file(tmp / name, text)
            _write_file(tmp / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
            _fsync_dir(tmp)
            try:
                _publish(tmp, final)
            except OSError:
                if final.exists():  # a concurrent writer stored the same content first
                    shutil.rmtree(tmp, ignore_errors=True)
                    return version
                raise
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("stored model %s in %s", version, self.root)
        return version

    def remove_stale_temp(self, older_than_s: float = 3600.0) -> list[Path]:
        """Delete temp folders left by crashed writers (older than ``older_than_s``)."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for path in self.root.iterdir():
            if path.name.startswith(TEMP_PREFIX) and now - path.stat().st_mtime >= older_than_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    # --- reading ---------------------------------------------------------------------------------

    def versions(self, product: str | None = None) -> list[str]:
        if not self.root.is_dir():
            return []
        names = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / METADATA_FILE).is_file())
        if product is None:
            return names
        product_id(product)
        # product, then the cutoff: "btc-usd-2024..." must not match a product called "btc-usd-perp"
        pattern = re.compile(re.escape(product.lower()) + r"-\d{8}T\d{4}Z-")
        return [n for n in names if pattern.match(n)]

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.root / version / METADATA_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise StoreError(f"model {version} is not in the store {self.root}") from exc
        except (OSError, ValueError) as exc:
            raise StoreError(f"model {version}: unreadable {path}: {exc}") from exc

    def verify(self, version: str) -> dict[str, Any]:
        """Re-hash every model file against the metadata; returns the metadata."""
        meta = self.metadata(version)
        hashes: dict[str, str] = meta.get("files") or {}
        if not hashes:
            raise ChecksumMismatch(f"model {version}: metadata lists no files")
        for name, expected in hashes.items():
            path = self.root / version / name
            try:
                actual = sha256_text(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ChecksumMismatch(f"model {version}: cannot read {name}: {exc}") from exc
            if actual != expected:
                raise ChecksumMismatch(
                    f"model {version}: checksum of {name} is {actual[:12]}..., metadata says {expected[:12]}..."
                )
        if combined_checksum(hashes) != meta.get("checksum"):
            raise ChecksumMismatch(f"model {version}: combined checksum does not match its metadata")
        return meta

    def load(self, version: str) -> LoadedModel:
        meta = self.verify(version)
        files = {name: (self.root / version / name).read_text(encoding="utf-8") for name in meta["files"]}
        try:
            forecaster = forecaster_from_files(str(meta["kind"]), files, tuple(meta.get("features", ())))
        except Exception as exc:
            raise StoreError(f"model {version}: cannot load ({type(exc).__name__}: {exc})") from exc
        return LoadedModel(version, meta, forecaster)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
