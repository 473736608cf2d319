"""Feature lineage: which SQL computes the features a model reads, as one hash, from dbt's manifest.

A model is only valid on features computed the way they were when it was trained. What computes them is the
dbt project: the feature models (``fct_candle_features`` and ``features_latest``), every model upstream of them
(staging, the hourly spine), and the macros those models call (``macros/window_features.sql``, ...), with the
macros *they* call. The manifest (``dbt parse`` or any dbt run writes it; dbt runs in its own venv, so it is
read as JSON, never imported) holds a sha256 ``checksum`` of each model's file and each macro's text; the
feature hash is sha256 over those, keyed by unique id and sorted: no path, timestamp or invocation id enters,
so the same project gives the same hash on every machine and every parse.

dbt's own macros (package ``dbt`` and the adapter's ``dbt_<adapter>``) are left out: they come with the dbt
release pinned in ``requirements/dbt.lock``, and hashing them would retire every model at a dbt patch upgrade.
``dbt_project.yml`` vars are not in the manifest and so not in the hash either (today they set the warm-up and
the incremental recompute span, not how a feature is computed).

Training records the hash and its parts in the model's metadata; evaluation (hence promotion) and hourly
inference skip a model whose hash differs from the current one, with a reason naming what changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FEATURE_MODELS: tuple[str, ...] = ("fct_candle_features", "features_latest")


class LineageError(RuntimeError):
    """The manifest is missing, unreadable, or lacks the feature models."""


@dataclass(frozen=True)
class FeatureLineage:
    """The feature hash and what it was computed from: model and macro unique ids to their sha256."""

    hash: str
    models: dict[str, str] = field(default_factory=dict)
    macros: dict[str, str] = field(default_factory=dict)
    dbt_version: str | None = None
    manifest: str | None = field(default=None, compare=False)  # where it was read: for messages only

    def as_metadata(self) -> dict[str, Any]:
        """What a model's metadata.json records next to ``feature_hash``, so a later skip can say what changed."""
        return {"models": dict(self.models), "macros": dict(self.macros), "dbt_version": self.dbt_version}

    def differences(self, recorded: dict[str, Any] | None) -> list[str]:
        """Short names of the models and macros that differ from a model's recorded lineage (added, removed or
        changed); empty when nothing was recorded to compare with."""
        if not recorded:
            return []
        out = []
        for kind, now in (("models", self.models), ("macros", self.macros)):
            then = recorded.get(kind) or {}
            for uid in sorted(set(now) | set(then)):
                if now.get(uid) != then.get(uid):
                    out.append(uid.split(".", 1)[-1])  # "model.candlecast.x" -> "candlecast.x"
        return out


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lineage_from_manifest(manifest: dict[str, Any], feature_models: tuple[str, ...] = FEATURE_MODELS,
                          where: str = "the manifest") -> FeatureLineage:
    """Pure: the lineage of ``feature_models`` (model names of the manifest's own project) in a parsed manifest."""
    try:
        meta = manifest["metadata"]
        project = str(meta["project_name"])
        nodes: dict[str, Any] = manifest["nodes"]
        macros: dict[str, Any] = manifest["macros"]
    except (KeyError, TypeError) as exc:
        raise LineageError(f"{where} is not a dbt manifest (no {exc})") from None
    internal = {"dbt", f"dbt_{meta.get('adapter_type') or ''}"}
    roots = [f"model.{project}.{name}" for name in feature_models]
    missing = [r for r in roots if r not in nodes]
    if missing:
        raise LineageError(f"{where} has no {', '.join(missing)}: is it the candlecast project's manifest?")

    # dbt records the macros a model calls as it renders it at parse time, so a call in a branch not taken then
    # (``{% if is_incremental() %}``) is not in ``depends_on``: calls of the project's macros are also found in
    # the code itself.
    own = {str(m["name"]): uid for uid, m in macros.items() if m.get("package_name") not in internal}
    names = "|".join(map(re.escape, sorted(own, key=len, reverse=True)))
    calls = re.compile(r"\b(" + names + r")\s*\(") if own else None

    def called(code: str) -> set[str]:
        return {own[name] for name in calls.findall(code)} if calls else set()

    models: dict[str, str] = {}
    used: set[str] = set()
    todo = list(roots)
    while todo:  # the feature models and every node upstream of them (sources have no code: left out)
        uid = todo.pop()
        if uid in models or uid not in nodes:
            continue
        node = nodes[uid]
        models[uid] = str(node["checksum"]["checksum"])
        todo.extend(node.get("depends_on", {}).get("nodes", []))
        used.update(node.get("depends_on", {}).get("macros", []))
        used.update(called(str(node.get("raw_code", ""))))

    macro_hashes: dict[str, str] = {}
    todo = sorted(used)
    while todo:  # the macros they call, and the macros those call
        uid = todo.pop()
        macro = macros.get(uid)
        if uid in macro_hashes or macro is None or macro.get("package_name") in internal:
            continue
        code = str(macro.get("macro_sql", ""))
        macro_hashes[uid] = _sha256(code)
        todo.extend([*macro.get("depends_on", {}).get("macros", []), *called(code)])

    payload = json.dumps({"models": models, "macros": macro_hashes}, sort_keys=True, separators=(",", ":"))
    return FeatureLineage(_sha256(payload), dict(sorted(models.items())), dict(sorted(macro_hashes.items())),
                          meta.get("dbt_version"), where)


def read_lineage(path: Path | str) -> FeatureLineage:
    """The lineage in the manifest at ``path``; re-read only when the file changed (the hourly step calls it)."""
    path = Path(path)
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise LineageError(f"dbt manifest not found at {path} ({exc.strerror}): run `make dbt-parse` (or any dbt "
                           "command on the project) to make it, or point CANDLECAST_DBT_MANIFEST at one") from None
    return _read(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> FeatureLineage:
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LineageError(f"cannot read the dbt manifest {path}: {exc}") from exc
    return lineage_from_manifest(manifest, where=path)


def stale_reason(metadata: dict[str, Any], lineage: FeatureLineage) -> str | None:
    """Why a model may not use today's features (its recorded feature hash differs), or None when it may.

    A model that reads no features (the naive baselines) is never stale.
    """
    if not metadata.get("features"):
        return None
    recorded = metadata.get("feature_hash")
    if recorded == lineage.hash:
        return None
    changed = lineage.differences(metadata.get("feature_lineage"))
    what = f": {', '.join(changed[:6])}{' and more' if len(changed) > 6 else ''} changed" if changed else ""
    return (f"feature lineage changed since training (feature hash {str(recorded)[:12]} at training, "
            f"{lineage.hash[:12]} in {lineage.manifest or 'the current manifest'}{what}): the dbt SQL that computes "
            "the features is not what it learned from; retrain")
