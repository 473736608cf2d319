"""The model store: immutable model versions, shared by every machine through MariaDB, cached in a local folder.

    <folder>/<version>/model.txt, quantile_10.txt, quantile_90.txt   (LightGBM native text) or baseline.json
    <folder>/<version>/metadata.json                                  (what, when, on which data, checksums)

Every pipeline path (the cycle's steps, the DAGs' tasks, ``python -m ml``, the demo) gives the store the ml role's
database (``ml.shared_store``): a version is published there, files and sha256, in one transaction, and any
machine loads it from there, so a model trained on one worker predicts on another. The folder is then each
machine's cache: a cached file is used only when its sha256 equals the one the database publishes; a missing or
corrupt one is fetched again. Without a database the folder is the store itself (a single machine, unit tests).

A version's folder is first written into a hidden temp folder in the same directory and then renamed into
place (``os.rename`` is atomic on one filesystem), so a crash mid-write leaves no visible version, only a
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
from ml.shared_store import SharedStoreError, StoreDatabase, sha256_bytes

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


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _publish(tmp: Path, final: Path) -> None:
    """The commit point: until this rename the version does not exist for any reader."""
    os.rename(tmp, final)


class ModelStore:
    """Model versions by name. With a ``database`` (``ml.shared_store``) the versions live in MariaDB, shared by every
    machine, and ``root`` is this machine's verified cache of them; without one, ``root`` is the store itself
    (a single machine, the unit tests)."""

    def __init__(self, root: Path | str, database: StoreDatabase | None = None) -> None:
        self.root = Path(root)
        self.database = database
        self._metadata: dict[str, dict[str, Any]] = {}  # of versions checked against the database (immutable)

    def __repr__(self) -> str:
        shared = f", database={str(self.database)!r}" if self.database is not None else ""
        return f"ModelStore({str(self.root)!r}{shared})"

    def __str__(self) -> str:
        return str(self.root) if self.database is None else f"{self.database} (cache {self.root})"

    # --- writing ---------------------------------------------------------------------------------

    def save(self, forecaster: Forecaster, metadata: dict[str, Any]) -> str:
        """Store a model; ``metadata`` needs at least ``product`` and ``training_cutoff`` (a datetime).

        Returns the version. Saving a model whose files are identical to a stored one of the same
        product, cutoff and kind returns the existing version and writes nothing. With a database, the
        version is written to the local folder first and then published from it (one transaction), so a
        crash between the two leaves a folder that the next save, load or metadata read publishes.
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
        if self.database is not None and self.database.file_hashes(version) is not None:
            log.info("model %s already stored in %s; nothing written", version, self.database)
            return version
        final = self.root / version
        if final.exists() and self.database is not None and not self._intact(version):
            final = self._set_aside(version)  # a half-written or corrupt leftover: written anew below
        if final.exists():
            log.info("model %s already stored; nothing written", version)
        else:
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
            content = {name: text.encode("utf-8") for name, text in files.items()}
            content[METADATA_FILE] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")
            if self._write_folder(version, content):
                log.info("stored model %s in %s", version, self.root)
        if self.database is not None:
            self._publish_folder(version)
        return version

    def _write_folder(self, version: str, content: dict[str, bytes]) -> bool:
        """Write a version's folder atomically (a temp folder renamed into place); False when another writer
        put the same version there first."""
        final = self.root / version
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TEMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for name, data in content.items():
                _write_file(tmp / name, data)
            _fsync_dir(tmp)
            try:
                _publish(tmp, final)
            except OSError:
                if final.exists():  # a concurrent writer stored the same content first
                    shutil.rmtree(tmp, ignore_errors=True)
                    return False
                raise
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    def _set_aside(self, version: str) -> Path:
        """Move a version's local folder out of the way (a temp name ``remove_stale_temp`` clears later)."""
        final = self.root / version
        try:
            os.rename(final, self.root / f"{TEMP_PREFIX}bad-{version}-{uuid.uuid4().hex[:8]}")
        except FileNotFoundError:
            pass  # another process on this machine set it aside first
        return final

    def _publish_folder(self, version: str) -> None:
        """Publish the local folder of ``version`` to the database, once it passes its own checksums."""
        assert self.database is not None
        meta = self._verify_local(version)
        names = [*meta["files"], METADATA_FILE]
        content = {name: (self.root / version / name).read_bytes() for name in names}
        if self.database.publish(version, str(meta["product"]), str(meta["checksum"]), content):
            log.info("published model %s to %s", version, self.database)

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
        if product is not None:
            product_id(product)
        if self.database is not None:
            return self.database.versions(product)
        if not self.root.is_dir():
            return []
        names = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / METADATA_FILE).is_file())
        if product is None:
            return names
        # product, then the cutoff: "btc-usd-2024..." must not match a product called "btc-usd-perp"
        pattern = re.compile(re.escape(product.lower()) + r"-\d{8}T\d{4}Z-")
        return [n for n in names if pattern.match(n)]

    def metadata(self, version: str) -> dict[str, Any]:
        if self.database is not None:
            # checked against the database once per store object: a version never changes
            return self._metadata.get(version) or self._shared(version)[0]
        return self._local_metadata(version)

    def _local_metadata(self, version: str) -> dict[str, Any]:
        path = self.root / version / METADATA_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise StoreError(f"model {version} is not in the store {self.root}") from exc
        except (OSError, ValueError) as exc:
            raise StoreError(f"model {version}: unreadable {path}: {exc}") from exc

    def verify(self, version: str) -> dict[str, Any]:
        """Re-hash every model file against the metadata (and, with a database, every file against the sha256
        published there, fetching the version again when the cached copy fails); returns the metadata."""
        if self.database is not None:
            return self._shared(version)[0]
        return self._verify_local(version)

    def _verify_local(self, version: str) -> dict[str, Any]:
        meta = self._local_metadata(version)
        texts: dict[str, str] = {}
        for name in meta.get("files") or {}:
            try:
                texts[name] = (self.root / version / name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ChecksumMismatch(f"model {version}: cannot read {name}: {exc}") from exc
        check_files(version, meta, texts)
        return meta

    def _intact(self, version: str) -> bool:
        try:
            self._verify_local(version)
        except StoreError:
            return False
        return True

    def _shared(self, version: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The version's metadata and model files, from the local cache when every file there matches the sha256
        the database publishes, else fetched from the database into the cache. A version only in the local folder
        (saved before the store was shared, or its publication was cut short) is published from it first."""
        assert self.database is not None
        try:
            expected = self.database.file_hashes(version)
            if expected is None:
                if not (self.root / version / METADATA_FILE).is_file():
                    raise StoreError(f"model {version} is not in the store {self.database}")
                self._publish_folder(version)
                expected = self.database.file_hashes(version) or {}
            content = self._read_cache(version, expected)
            if content is None:
                content = self.database.fetch(version)
                if set(content) != set(expected):
                    raise StoreError(f"model {version}: {self.database} changed while it was fetched")
                if (self.root / version).exists():
                    self._set_aside(version)
                self._write_folder(version, content)
        except SharedStoreError as exc:
            raise StoreError(str(exc)) from exc
        try:
            meta = json.loads(content[METADATA_FILE].decode("utf-8"))
            texts = {name: content[name].decode("utf-8") for name in meta.get("files") or {}}
        except (KeyError, ValueError) as exc:
            raise ChecksumMismatch(f"model {version}: its files in {self.database} do not match its metadata: "
                                   f"{type(exc).__name__}: {exc}") from exc
        check_files(version, meta, texts)
        self._metadata[version] = meta
        return meta, texts

    def _read_cache(self, version: str, expected: dict[str, str]) -> dict[str, bytes] | None:
        """The cached files of ``version`` when each is there with the sha256 ``expected``; None (and why, logged)
        when any is missing or differs."""
        folder = self.root / version
        if not folder.is_dir():
            log.info("model %s is not in the cache %s: fetching it", version, self.root)
            return None
        content: dict[str, bytes] = {}
        for name, digest in expected.items():
            try:
                data = (folder / name).read_bytes()
            except OSError as exc:
                log.warning("model %s: cached %s unreadable (%s): fetching it again", version, name, exc)
                return None
            if sha256_bytes(data) != digest:
                log.warning("model %s: cached %s fails its sha256 (%s..., published %s...): fetching it again",
                            version, folder / name, sha256_bytes(data)[:12], digest[:12])
                return None
            content[name] = data
        return content

    def load(self, version: str) -> LoadedModel:
        if self.database is not None:
            meta, files = self._shared(version)
        else:
            meta = self._verify_local(version)
            files = {name: (self.root / version / name).read_text(encoding="utf-8") for name in meta["files"]}
        try:
            forecaster = forecaster_from_files(str(meta["kind"]), files, tuple(meta.get("features", ())))
        except Exception as exc:
            raise StoreError(f"model {version}: cannot load ({type(exc).__name__}: {exc})") from exc
        return LoadedModel(version, meta, forecaster)


def check_files(version: str, meta: dict[str, Any], texts: dict[str, str]) -> None:
    """``ChecksumMismatch`` unless ``texts`` are exactly the model files ``meta`` lists, with their checksums."""
    hashes: dict[str, str] = meta.get("files") or {}
    if not hashes:
        raise ChecksumMismatch(f"model {version}: metadata lists no files")
    for name, expected in hashes.items():
        if name not in texts:
            raise ChecksumMismatch(f"model {version}: {name} is missing")
        actual = sha256_text(texts[name])
        if actual != expected:
            raise ChecksumMismatch(
                f"model {version}: checksum of {name} is {actual[:12]}..., metadata says {expected[:12]}..."
            )
    if combined_checksum(hashes) != meta.get("checksum"):
        raise ChecksumMismatch(f"model {version}: combined checksum does not match its metadata")


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
