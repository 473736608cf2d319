"""What a cycle works on, resolved once at the edge: the environment, the products and the model store.

The cycle command resolves it from env vars (the local credentials file underneath, env vars winning); an
Airflow task resolves it from the task's environment with Airflow Variables and Connections laid over it
(``dags/candlecast_orchestration/tasks.py``). Either way the steps get the same ``RunContext``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from candlecast.hours import HOUR, floor_hour
from candlecast.settings import SettingsError


@dataclass(frozen=True)
class Interval:
    """The hours ``[start, end)`` a run covers (an Airflow data interval), floored to whole UTC hours."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Interval:
        return cls(floor_hour(start), floor_hour(end))

    @classmethod
    def hour_ending(cls, end: datetime) -> Interval:
        """The one closed hour that ends at ``end``."""
        end = floor_hour(end)
        return cls(end - HOUR, end)

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M} UTC"


def schema_base(env: Mapping[str, str]) -> str:
    """The database base name the cycle writes (``CANDLECAST_DB_SCHEMA``): its lock and dbt files are per base."""
    from candlecast.settings import DbServer

    return DbServer.from_env(env).schemas.base


def parse_products(raw: str, source: str) -> tuple[str, ...]:
    """Comma-separated product ids from ``source`` (an Airflow Variable, say), each checked at this edge."""
    from candlecast.inputs import InvalidInput, product_ids

    try:
        return product_ids(raw, source)
    except InvalidInput as exc:
        raise SettingsError(str(exc)) from None


RECOMPUTE_VAR = "recompute_hours"


def dbt_recompute_hours(project_dir: Path) -> int:
    """The dbt var ``recompute_hours`` of ``dbt_project.yml``: how many hours behind its newest built hour
    each incremental feature run recomputes."""
    import yaml

    path = project_dir / "dbt_project.yml"
    try:
        project = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read the dbt var {RECOMPUTE_VAR} from {path}: {exc}") from exc
    value = ((project or {}).get("vars") or {}).get(RECOMPUTE_VAR) if isinstance(project, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingsError(f"{path}: vars.{RECOMPUTE_VAR} must be a whole number of hours, got {value!r}")
    return value


def check_refetch_within_recompute(refetch_hours: int, recompute_hours: int, where: Path | str) -> None:
    """Late and corrected candles land up to ``refetch_hours`` behind the interval's end; the incremental
    feature run recomputes ``recompute_hours`` behind the newest built hour. With the re-fetch window not
    below that, a late candle lands where the features are never recomputed: silently stale features and
    forecasts until a full refresh. Refused before anything runs."""
    if refetch_hours >= recompute_hours:
        raise SettingsError(
            f"CANDLECAST_EXTRACT_REFETCH_HOURS={refetch_hours} must be below the dbt var {RECOMPUTE_VAR}="
            f"{recompute_hours} ({where}): candles re-fetched {recompute_hours} h or more behind the newest hour "
            f"would never reach the features; lower CANDLECAST_EXTRACT_REFETCH_HOURS or raise {RECOMPUTE_VAR}")


@dataclass(frozen=True)
class RunContext:
    """The environment the steps read their connection settings from (and hand to dbt), and what they work on."""

    # The settings the steps read, over the credentials file's: without the file's passwords (a step's
    # process gets its role's from the file, ``candlecast.role_env``), with those the caller's own environment
    # holds (an Airflow task's Connection, exported variables). Never printed.
    env: Mapping[str, str] = field(repr=False)
    products: tuple[str, ...]
    model_store: Path
    # File descriptors the steps' child processes (dbt) inherit: the cycle's lock, set by ``cycle.run`` while it
    # holds it, so a dbt that outlives a killed cycle keeps the next cycle waiting instead of colliding with it.
    inherit_fds: tuple[int, ...] = ()
    # The steps of this run that failed before the current one (set by ``cycle.run``, and in Airflow from the
    # run's task states): a step that runs after a failure (``Step.runs_after_failure``) can say why its data
    # is missing, e.g. the forecast's fallback naming the failed extract.
    failed_steps: tuple[str, ...] = ()
    # The dbt manifest of the project that builds the feature tables: the ML steps read the feature lineage from
    # it (``ml.lineage``). None: ``CANDLECAST_DBT_MANIFEST`` (what ``make dbt-parse`` writes and Cosmos renders the
    # DAGs from); the cycle command sets the one its own dbt steps write (``cycle.steps.dbt_target_dir``).
    dbt_manifest: Path | None = None
    # How many processes an ML step runs in, each with a share of the products (``CANDLECAST_ML_WORKERS``).
    workers: int = 1

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None, *, products: Sequence[str] | None = None,
                model_store: Path | str | None = None) -> RunContext:
        """From ``env`` (default: the process's, over the local credentials file); ``products`` and
        ``model_store`` override ``CANDLECAST_EXTRACT_PRODUCTS`` and ``CANDLECAST_MODEL_STORE`` when given.
        Refuses (``SettingsError``) an extractor re-fetch window not below the dbt var ``recompute_hours``."""
        from candlecast.role_env import password_vars
        from candlecast.settings import ExtractSettings, dbt_settings, effective_env, ml_settings

        given = os.environ if env is None else env
        full = effective_env(given)
        extract = ExtractSettings.from_env(full)
        project_dir = dbt_settings(full).project_dir
        check_refetch_within_recompute(extract.refetch_hours, dbt_recompute_hours(project_dir),
                                       project_dir / "dbt_project.yml")
        chosen = tuple(products) if products else extract.products
        if not chosen:
            raise SettingsError("no product to run: set CANDLECAST_EXTRACT_PRODUCTS")
        chosen = parse_products(",".join(chosen), "--product" if products else "CANDLECAST_EXTRACT_PRODUCTS")
        ml = ml_settings(full)
        store = Path(model_store) if model_store else ml.store_dir
        secrets_from_file = set(password_vars()) - set(given)
        kept = {key: value for key, value in full.items() if key not in secrets_from_file}
        return cls(env=kept, products=chosen, model_store=store, workers=ml.step_workers)
