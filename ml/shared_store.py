"""The shared half of the model store: every version's files in MariaDB, so a model trained on one worker machine
loads on any other (``ml.store.ModelStore`` keeps a local folder of them as a verified cache).

    {base}_ml.model_store_versions   one row per version: product, the combined checksum, how many files, when
    {base}_ml.model_store_files      one row per file of a version: name, sha256, size, content

A version is published in one transaction, its files and its version row together, so no reader ever sees part
of one; readers list versions from the version table and join the files on it. Rows are only ever inserted,
never updated or deleted: a version's name ends in its files' checksum, so publishing it again is a no-op (the
primary key refuses the second insert). The sha256 each reader checks a file against comes from here, not from
the local copy it checks, so a corrupt or tampered cache file is found and fetched again. The ml role writes
and reads these tables (it owns ``{base}_ml``); no other role is granted them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from candlecast.settings import Schemas
from candlecast.sql import quote_ident

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

VERSIONS_TABLE = "model_store_versions"
FILES_TABLE = "model_store_files"

DDL = (
    f"""
    create table if not exists {{ml}}.{VERSIONS_TABLE} (
        model_version varchar(128) not null,
        product_id    varchar(32)  not null,
        checksum      char(64)     not null comment 'sha256 over the model files'' hashes (ml.store.combined_checksum)',
        file_count    int          not null comment 'rows of the version in {FILES_TABLE}, metadata.json included',
        stored_at     datetime(6)  not null comment 'UTC time of publication',
        primary key (model_version),
        key ix_{VERSIONS_TABLE}_product (product_id, model_version)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    comment 'published model versions (ml.shared_store): insert-only'
    """,
    f"""
    create table if not exists {{ml}}.{FILES_TABLE} (
        model_version varchar(128) not null,
        file_name     varchar(64)  not null,
        sha256        char(64)     not null comment 'of content',
        size_bytes    bigint       not null,
        content       longblob     not null,
        primary key (model_version, file_name)
    ) engine=InnoDB default charset=utf8mb4 collate=utf8mb4_unicode_ci
    comment 'the files of each published model version (ml.shared_store): insert-only'
    """,
)


class SharedStoreError(RuntimeError):
    """The store's tables cannot be read or written, or hold a version other than the one being published."""


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass
class StoreDatabase:
    """The model store's tables in one base's ``{base}_ml``, reached through the ml role's engine."""

    engine: Engine
    schemas: Schemas
    _ready: bool = field(default=False, repr=False, compare=False)

    def __str__(self) -> str:
        url = self.engine.url
        return f"{self.schemas.ml}.{VERSIONS_TABLE} on {url.username}@{url.host}:{url.port}"

    def _table(self, name: str) -> str:
        return f"{quote_ident(self.schemas.ml)}.{quote_ident(name)}"

    def ensure_tables(self) -> None:
        """Create the tables if missing; once per instance (they are only ever created, never altered)."""
        from sqlalchemy import text

        if self._ready:
            return
        try:
            with self.engine.begin() as conn:
                for statement in DDL:
                    conn.execute(text(statement.format(ml=quote_ident(self.schemas.ml))))
        except Exception as exc:
            raise SharedStoreError(f"cannot create the model store's tables in {self}: {exc}") from exc
        self._ready = True

    def versions(self, product: str | None = None) -> list[str]:
        """Published versions, sorted by name (product, then training cutoff); of one product when given."""
        from sqlalchemy import text

        self.ensure_tables()
        where, params = ("where product_id = :p", {"p": product}) if product is not None else ("", {})
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text(f"select model_version from {self._table(VERSIONS_TABLE)} {where} "
                                         "order by model_version"), params).scalars().all()
        except Exception as exc:
            raise SharedStoreError(f"cannot list the models in {self}: {exc}") from exc
        return [str(v) for v in rows]

    def file_hashes(self, version: str) -> dict[str, str] | None:
        """The published version's files and their sha256, or None when it is not published."""
        from sqlalchemy import text

        self.ensure_tables()
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text(
                    f"select v.file_count, f.file_name, f.sha256 from {self._table(VERSIONS_TABLE)} v "
                    f"left join {self._table(FILES_TABLE)} f on f.model_version = v.model_version "
                    "where v.model_version = :v"), {"v": version}).all()
        except Exception as exc:
            raise SharedStoreError(f"model {version}: cannot read its files' checksums from {self}: {exc}") from exc
        if not rows:
            return None
        hashes = {str(name): str(digest) for _, name, digest in rows if name is not None}
        if len(hashes) != int(rows[0][0]):
            raise SharedStoreError(f"model {version}: {self} lists {rows[0][0]} files, {len(hashes)} are stored")
        return hashes

    def fetch(self, version: str) -> dict[str, bytes]:
        """The published version's files, each checked against its sha256 (``SharedStoreError`` if one fails)."""
        from sqlalchemy import text

        self.ensure_tables()
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text(
                    f"select f.file_name, f.sha256, f.content from {self._table(FILES_TABLE)} f "
                    f"join {self._table(VERSIONS_TABLE)} v on v.model_version = f.model_version "
                    "where f.model_version = :v"), {"v": version}).all()
        except Exception as exc:
            raise SharedStoreError(f"model {version}: cannot fetch its files from {self}: {exc}") from exc
        if not rows:
            raise SharedStoreError(f"model {version} is not published in {self}")
        files: dict[str, bytes] = {}
        for name, expected, content in rows:
            data = bytes(content)
            if sha256_bytes(data) != expected:
                raise SharedStoreError(f"model {version}: {name} as stored in {self} fails its sha256 "
                                       f"({sha256_bytes(data)[:12]}..., recorded {str(expected)[:12]}...)")
            files[str(name)] = data
        return files

    def publish(self, version: str, product: str, checksum: str, files: dict[str, bytes]) -> bool:
        """Insert the version and its files in one transaction; False (nothing written) when it is published
        already with the same checksum. ``SharedStoreError`` when it is published with another checksum."""
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        self.ensure_tables()
        try:
            with self.engine.begin() as conn:
                # the version row first: a concurrent publisher of the same version waits on its key, then fails
                conn.execute(text(f"insert into {self._table(VERSIONS_TABLE)} (model_version, product_id, checksum, "
                                  "file_count, stored_at) values (:v, :p, :c, :n, utc_timestamp(6))"),
                             {"v": version, "p": product, "c": checksum, "n": len(files)})
                conn.execute(text(f"insert into {self._table(FILES_TABLE)} (model_version, file_name, sha256, "
                                  "size_bytes, content) values (:v, :name, :sha, :size, :content)"),
                             [{"v": version, "name": name, "sha": sha256_bytes(data), "size": len(data),
                               "content": data} for name, data in sorted(files.items())])
        except IntegrityError:
            stored = self._checksum(version)
            if stored == checksum:
                return False
            raise SharedStoreError(f"model {version} is published in {self} with checksum {str(stored)[:12]}..., "
                                   f"not {checksum[:12]}...") from None
        except Exception as exc:
            raise SharedStoreError(f"model {version}: cannot publish it to {self}: {exc}") from exc
        return True

    def _checksum(self, version: str) -> str | None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            value = conn.execute(text(f"select checksum from {self._table(VERSIONS_TABLE)} where model_version = :v"),
                                 {"v": version}).scalar()
        return None if value is None else str(value)
