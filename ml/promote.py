"""Promotion: which model serves, on its holdout score and, where the models have one, their live record.

The rule (persistence always competes; ties go to the simpler model: persistence, then drift, then the rest):

1. Every stored model is scored on the same holdout window none of them trained on (``ml.evaluate``). Without a
   scored ``naive_persistence`` nothing is promoted: no model could be shown to beat it.
2. The live record (``ml.live``): every model's realized forecasts, served or shadow, over the trailing
   ``live_hours`` (``CANDLECAST_PROMOTION_LIVE_HOURS``, 672 h) before the window's end, on the hours every model
   with a record forecast (a model missing any of those hours has no record), with persistence's MAE on the same
   hours. It is *usable* when it covers at least ``min_live_hours`` (``CANDLECAST_PROMOTION_MIN_LIVE_HOURS``, 168).
3. Without a usable live record: the lowest holdout MAE wins. Evidence ``holdout``.
4. With one: among the scored models that have a record (they have forecast every hour of the window: the
   production model and the shadows that were registered before it), the lowest live MAE is the *live
   champion*; when none beats persistence's live MAE, the champion is the scored persistence model. The champion
   then meets, on the holdout, every scored model without a record (the newly trained ones, persistence's new
   version among them): the lowest holdout MAE wins. Evidence ``live`` when the champion wins (the longer, real
   record chose it, and no newcomer beat it on the holdout), ``holdout`` when a newcomer does.

5. After the decision, candidates of training cutoffs older than the newest ``shadow_retrains``
   (``CANDLECAST_SHADOW_RETRAINS``, 4) are archived (the winner excepted): every weekly retrain adds three
   candidates, and all of them forecast every hour in the shadow of production; four retrains' worth (~12
   shadows) keeps the hourly step's cost bounded, and a model four weeks old has had its live record to win on.
   An archived model stays in the store; evaluation still scores it and a later promotion may bring it back.

Why: the holdout is one week, scored after the fact on today's feature rows; the live record is up to four weeks of
forecasts as they were made. Between models that have both, the longer record is the better evidence; a model
trained this week has only the holdout, so it must beat the champion there. The evidence that decided, both
scores and the live record go to ``model_promotions`` (``evidence``, ``metrics``, ``reason``).
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

    from ml.live import LiveRecord

log = logging.getLogger(__name__)

_SIMPLICITY = {PERSISTENCE: 0, DRIFT: 1}
HOLDOUT, LIVE = "holdout", "live"


class PromotionError(RuntimeError):
    pass


@dataclass(frozen=True)
class PromotionRule:
    live_hours: int = 672  # the live record's trailing window
    min_live_hours: int = 168  # fewer hours with a fair record than this, and the holdout alone decides
    shadow_retrains: int = 4  # candidates of older training cutoffs are archived: they stop forecasting


@dataclass(frozen=True)
class PromotionDecision:
    product: str
    winner: str
    previous: str | None
    reason: str
    evidence: str = HOLDOUT
    retired: tuple[str, ...] = ()  # candidates archived by this promotion (older than the shadows kept)

    @property
    def changed(self) -> bool:
        return self.winner != self.previous

    def summary(self) -> str:
        if self.changed:
            return f"{self.product}: promoted {self.winner} (was {self.previous or 'none'}) on the {self.evidence}: " \
                   f"{self.reason}"
        return f"{self.product}: kept {self.winner} in production ({self.evidence}): {self.reason}"


@dataclass(frozen=True)
class Choice:
    """What the rule chose, the scored persistence it was measured against, and on which evidence."""

    winner: ModelResult
    reference: ModelResult
    evidence: str
    champion: ModelResult | None = None  # the live champion, when the live record was usable


def _holdout_key(r: ModelResult) -> tuple[float, int, str]:
    assert r.scores is not None
    return (r.scores.mae, _SIMPLICITY.get(r.kind or "", 2), r.version)


def choose(report: EvaluationReport, live: LiveRecord | None = None, rule: PromotionRule = PromotionRule()) -> Choice:
    """The rule above; pure, so it is testable without a database."""
    scored = report.scored
    persistence = [r for r in scored if r.kind == PERSISTENCE]
    if not persistence:
        raise PromotionError(
            f"{report.product}: no naive_persistence model was scored on the holdout window, so no model can be "
            "shown to beat it; nothing promoted (train again to store the baselines)"
        )
    reference = min(persistence, key=_holdout_key)
    if live is None or not live.usable(rule.min_live_hours):
        return Choice(min(scored, key=_holdout_key), reference, HOLDOUT)
    veterans = [r for r in scored if r.version in live.mae]
    if not veterans:
        return Choice(min(scored, key=_holdout_key), reference, HOLDOUT)
    assert live.persistence_mae is not None

    def live_key(r: ModelResult) -> tuple[float, int, str]:
        return (live.mae[r.version], _SIMPLICITY.get(r.kind or "", 2), r.version)

    best = min(veterans, key=live_key)
    # persistence's live MAE comes from the closes themselves: a veteran must beat it, ties going to persistence
    champion = best if live.mae[best.version] < live.persistence_mae or best.kind == PERSISTENCE else reference
    newcomers = [r for r in scored if r.version not in live.mae]
    winner = min([champion, *newcomers], key=_holdout_key)
    return Choice(winner, reference, LIVE if winner is champion else HOLDOUT, champion)


def _reason(report: EvaluationReport, choice: Choice, live: LiveRecord | None, rule: PromotionRule) -> str:
    w, ref = choice.winner, choice.reference
    assert w.scores is not None and ref.scores is not None
    window = f"{report.window_start:%Y-%m-%d %H:%M}..{report.window_end:%Y-%m-%d %H:%M} UTC"
    holdout = (f"holdout {window} ({report.rows} h): ${w.scores.mae:.2f} vs persistence ${ref.scores.mae:.2f} "
               f"(skill {w.scores.skill:+.4f}); {len(report.scored)} scored, {len(report.skipped)} skipped")
    if choice.evidence == LIVE and live is not None and live.persistence_mae is not None:
        mae = live.mae.get(w.version, live.persistence_mae)
        return (f"lowest live MAE over {live.hours} h of realized forecasts {live.start:%Y-%m-%d %H:%M}.."
                f"{live.end:%Y-%m-%d %H:%M} UTC: ${mae:.2f} vs persistence ${live.persistence_mae:.2f} "
                f"({len(live.mae)} models with a full record), and no newer model beat it on the {holdout}")
    if choice.champion is not None:
        return f"lowest MAE on the {holdout}, beating the live champion {choice.champion.version}"
    if live is None or not live.mae:
        why = "no model has a live record yet"
    elif live.hours < rule.min_live_hours:
        why = f"live record of {live.hours} h, fewer than the {rule.min_live_hours} h it needs"
    else:
        why = "no scored model has a live record"
    return f"lowest MAE on the {holdout} ({why})"


def promote(engine: Engine, schemas: Schemas, report: EvaluationReport,
            rule: PromotionRule = PromotionRule()) -> PromotionDecision:
    """Apply the rule to ``report`` and the live record ending at its window's end; record a switch."""
    from ml.live import live_record
    from ml.registry import ensure_ml_tables, retire_candidates, switch_production

    ensure_ml_tables(engine, schemas)
    live = live_record(engine, schemas, report.product, report.window_end, rule.live_hours)
    choice = choose(report, live, rule)
    reason = _reason(report, choice, live, rule)
    metrics = {
        "window": [report.window_start.isoformat(), report.window_end.isoformat()],
        "evidence": choice.evidence,
        "winner": choice.winner.as_row(),
        "models": [r.as_row() for r in report.results],
        "live": live.as_json(),
        "rule": {"live_hours": rule.live_hours, "min_live_hours": rule.min_live_hours},
    }
    previous = switch_production(engine, schemas, report.product, choice.winner.version,
                                 (report.window_start, report.window_end), metrics, reason, choice.winner.metadata,
                                 evidence=choice.evidence)
    with engine.begin() as conn:
        retired = retire_candidates(conn, schemas, report.product, rule.shadow_retrains, keep=choice.winner.version)
    if retired:
        log.info("%s: archived %d candidate(s) older than the newest %d training cutoffs: %s", report.product,
                 len(retired), rule.shadow_retrains, ", ".join(retired))
    decision = PromotionDecision(report.product, choice.winner.version, previous, reason, choice.evidence,
                                 tuple(retired))
    log.info("%s", decision.summary())
    return decision
