"""Score every stored model of a product on the same most-recent holdout window none of them trained on.

The window starts at the newest model's training cutoff (so it is after every model's training data)
and ends at the caller's ``window_end``. A model is skipped, with the reason recorded, when its files
fail their checksum, its features are no longer in the table or the dbt SQL computing them changed since
it was trained (``ml.lineage``), or it errors; it is never scored on anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from candlecast.hours import naive_utc
from candlecast.settings import Schemas
from ml.eligibility import ineligibility
from ml.features import FEATURE_COLUMNS, TARGET_CLOSE_COLUMN, table_columns, usable_rows
from ml.lineage import FeatureLineage
from ml.metrics import Scores, score_rows
from ml.store import ModelStore, StoreError, parse_time

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

SCORED, SKIPPED = "scored", "skipped"


class EvaluationError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelResult:
    version: str
    kind: str | None
    status: str
    reason: str | None = None
    scores: Scores | None = None
    metadata: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def as_row(self) -> dict[str, Any]:
        return {"version": self.version, "status": self.status, "reason": self.reason,
                "scores": self.scores.as_dict() if self.scores else {}}


@dataclass(frozen=True)
class EvaluationReport:
    product: str
    window_start: datetime
    window_end: datetime
    rows: int
    results: list[ModelResult] = field(default_factory=list)

    @property
    def scored(self) -> list[ModelResult]:
        return [r for r in self.results if r.status == SCORED]

    @property
    def skipped(self) -> list[ModelResult]:
        return [r for r in self.results if r.status == SKIPPED]

    def table(self) -> str:
        lines = [f"{self.product}: holdout {self.window_start:%Y-%m-%d %H:%M} to {self.window_end:%Y-%m-%d %H:%M} UTC "
                 f"({self.rows} hours)",
                 f"  {'model':<62} {'MAE':>9} {'RMSE':>9} {'MAPE%':>7} {'dir':>6} {'skill':>8} {'cov80':>6}"]
        for r in sorted(self.scored, key=lambda r: r.scores.mae if r.scores else 0):
            s = r.scores
            assert s is not None
            direction = "-" if s.direction_accuracy != s.direction_accuracy else f"{s.direction_accuracy:.3f}"
            lines.append(f"  {r.version:<62} {s.mae:>9.2f} {s.rmse:>9.2f} {s.mape:>7.3f} {direction:>6} "
                         f"{s.skill:>+8.4f} {s.coverage_80:>6.3f}")
        for r in self.skipped:
            lines.append(f"  {r.version:<62} skipped: {r.reason}")
        return "\n".join(lines)


def holdout_start(store: ModelStore, versions: Iterable[str]) -> datetime | None:
    """The newest training cutoff among readable models: the holdout window starts there."""
    cutoffs = []
    for v in versions:
        try:
            cutoffs.append(parse_time(store.metadata(v)["training_cutoff"]))
        except (StoreError, KeyError, ValueError):
            continue
    return max(cutoffs) if cutoffs else None


def score_models(store: ModelStore, versions: list[str], rows: pd.DataFrame, available: set[str],
                 lineage: FeatureLineage, progress: Callable[[str], None] | None = None) -> list[ModelResult]:
    """Score each version on ``rows`` (usable holdout rows) computed as ``lineage`` says; pure apart from reading
    the store."""
    results = []
    for version in versions:
        kind: str | None = None
        try:
            loaded = store.load(version)
            kind = loaded.kind
            reason = ineligibility(loaded.metadata, available, lineage)
            if reason is not None:
                raise _Skip(reason)
            fc = loaded.forecaster.predict(rows)
            scores = score_rows(rows["close"], rows[TARGET_CLOSE_COLUMN], fc.point, fc.lower, fc.upper)
            if scores.mae != scores.mae:  # NaN: a model producing NaN must not win by accident
                raise _Skip("predictions contain NaN")
            results.append(ModelResult(version, kind, SCORED, None, scores, loaded.metadata))
        except _Skip as exc:
            results.append(ModelResult(version, kind, SKIPPED, str(exc)))
        except StoreError as exc:
            results.append(ModelResult(version, kind, SKIPPED, str(exc)))
        except Exception as exc:  # one broken model must not stop the others from being compared
            results.append(ModelResult(version, kind, SKIPPED, f"error: {type(exc).__name__}: {exc}"))
        if results[-1].status == SKIPPED:
            log.warning("skipped %s: %s", version, results[-1].reason)
        if progress:
            progress(version)
    return results


class _Skip(Exception):
    pass


def evaluate(engine: Engine, schemas: Schemas, store: ModelStore, product: str, window_end: datetime,
             min_hours: int = 24, record: bool = True,
             progress: Callable[[str], None] | None = None, *, lineage: FeatureLineage) -> EvaluationReport:
    """Score every stored model of ``product`` on [newest cutoff, ``window_end``) and record the results.

    ``lineage``: how the feature table is computed today (``ml.lineage``); a model trained on other SQL is skipped.
    """
    from ml.features import read_features
    from ml.registry import ensure_ml_tables, record_evaluations, register

    window_end = naive_utc(window_end)
    versions = store.versions(product)
    if not versions:
        raise EvaluationError(f"{product}: no models in the store {store}; run `python -m ml train` first")
    start = holdout_start(store, versions)
    if start is None:
        raise EvaluationError(f"{product}: no readable model metadata in {store}")
    available = table_columns(engine, schemas)
    if not available:
        raise EvaluationError(f"{schemas.marts}.fct_candle_features does not exist or is not readable")
    wanted = set(FEATURE_COLUMNS)
    for v in versions:
        try:
            wanted.update(store.metadata(v).get("features") or [])
        except StoreError:
            continue
    columns = sorted(c for c in wanted if c.lower() in available)
    frame = read_features(engine, schemas, product, start=start, end=window_end, columns=columns, validate=False)
    import pandas as pd

    frame = frame.loc[frame["hour"] + pd.Timedelta(hours=1) < pd.Timestamp(window_end)]
    rows = usable_rows(frame)
    if len(rows) < min_hours:
        raise EvaluationError(
            f"{product}: holdout window {start:%Y-%m-%d %H:%M} to {window_end:%Y-%m-%d %H:%M} UTC has {len(rows)} "
            f"forecastable hours with a realized target, need {min_hours}: train with an earlier cutoff "
            f"(the newest model's cutoff must leave a holdout before the window end)"
        )
    results = score_models(store, versions, rows, available, lineage, progress)
    report = EvaluationReport(product, start, window_end, len(rows), results)
    if record:
        ensure_ml_tables(engine, schemas)
        with engine.begin() as conn:
            for r in results:
                if r.status == SCORED:
                    register(conn, schemas, store.metadata(r.version))
            record_evaluations(conn, schemas, product, (start, window_end), [r.as_row() for r in results])
    return report


def holdout_cutoff(window_end: datetime, holdout_hours: int) -> datetime:
    """The training cutoff that leaves ``holdout_hours`` of evaluation window before ``window_end``."""
    return naive_utc(window_end) - timedelta(hours=holdout_hours)
