"""Promotion: the lowest holdout MAE becomes production, and persistence always competes.

Because ``naive_persistence`` is scored on the same window, a model can only take production by
beating it there; when nothing does, persistence serves. Ties go to the simpler model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from candlecast.settings import Schemas
from ml.evaluate import EvaluationReport, ModelResult
from ml.model import DRIFT, PERSISTENCE

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

_SIMPLICITY = {PERSISTENCE: 0, DRIFT: 1}


class PromotionError(RuntimeError):
    pass


@dataclass(frozen=True)
class PromotionDecision:
    product: str
    winner: str
    previous: str | None
    reason: str

    @property
    def changed(self) -> bool:
        return self.winner != self.previous

    def summary(self) -> str:
        if self.changed:
            return f"{self.product}: promoted {self.winner} (was {self.previous or 'none'}): {self.reason}"
        return f"{self.product}: kept {self.winner} in production: {self.reason}"


def choose(report: EvaluationReport) -> tuple[ModelResult, ModelResult]:
    """(winner, persistence result); pure, so the rule is testable without a database."""
    scored = report.scored
    persistence = [r for r in scored if r.kind == PERSISTENCE]
    if not persistence:
        raise PromotionError(
            f"{report.product}: no naive_persistence model was scored on the holdout window, so no model can be "
            "shown to beat it; nothing promoted (train again to store the baselines)"
        )
    reference = min(persistence, key=lambda r: r.scores.mae if r.scores else float("inf"))

    def key(r: ModelResult) -> tuple[float, int, str]:
        assert r.scores is not None
        return (r.scores.mae, _SIMPLICITY.get(r.kind or "", 2), r.version)

    return min(scored, key=key), reference


def promote(engine: Engine, schemas: Schemas, report: EvaluationReport) -> PromotionDecision:
    from ml.registry import ensure_ml_tables, switch_production

    winner, reference = choose(report)
    assert winner.scores is not None and reference.scores is not None
    reason = (
        f"lowest MAE on holdout {report.window_start:%Y-%m-%d %H:%M}..{report.window_end:%Y-%m-%d %H:%M} UTC "
        f"({report.rows} h): ${winner.scores.mae:.2f} vs persistence ${reference.scores.mae:.2f} "
        f"(skill {winner.scores.skill:+.4f}); {len(report.scored)} scored, {len(report.skipped)} skipped"
    )
    metrics = {
        "window": [report.window_start.isoformat(), report.window_end.isoformat()],
        "winner": winner.as_row(),
        "models": [r.as_row() for r in report.results],
    }
    ensure_ml_tables(engine, schemas)
    previous = switch_production(engine, schemas, report.product, winner.version,
                                 (report.window_start, report.window_end), metrics, reason, winner.metadata)
    decision = PromotionDecision(report.product, winner.version, previous, reason)
    log.info("%s", decision.summary())
    return decision
