"""Is the pipeline healthy, per product? Pure checks over facts read from the marts and the caller's clock.

Each check is ``ok``, ``warn`` or ``error``; a product's status is its worst check, the whole answer's the worst
product's. The API answers 200 unless some check is an ``error`` (503), so a load balancer can act on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from candlecast.hours import HOUR, floor_hour, naive_utc
from candlecast.settings import ApiSettings
from serve.marts import HealthFacts

LEVELS = ("ok", "warn", "error")
# Interval coverage outside this band is worth a look, not an outage.
COVERAGE_BAND = (0.65, 0.95)
# Fewer realized hours than this and the trailing skill says too little to alarm on.
MIN_HOURS_FOR_SKILL = 24


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def worst(statuses: list[str]) -> str:
    return max(statuses, key=LEVELS.index, default="ok")


def _hours(delta: timedelta) -> int:
    return int(delta / HOUR)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def product_checks(facts: HealthFacts, now: datetime, settings: ApiSettings) -> list[Check]:
    """The checks of one product at ``now`` (aware or naive UTC; the last closed hour is the one before it)."""
    last_closed = naive_utc(floor_hour(now)) - HOUR
    checks = []
    if facts.newest_hour is None:
        checks.append(Check("freshness", "error", "no candle in the feature mart"))
    else:
        behind = _hours(last_closed - facts.newest_hour)
        status = "error" if behind > settings.stale_after_hours else "ok"
        checks.append(Check("freshness", status,
                            f"newest candle {facts.newest_hour:%Y-%m-%d %H:%M} UTC, {max(behind, 0)} h behind the "
                            f"last closed hour {last_closed:%Y-%m-%d %H:%M} UTC (error beyond "
                            f"{settings.stale_after_hours} h)"))
    if facts.newest_target_hour is None:
        checks.append(Check("last_cycle", "error", "the hourly step has served no forecast yet"))
    elif facts.newest_hour is not None:
        # The cycle forecasts the hour after the newest candle; between the feature build and the accuracy
        # build of one cycle it is briefly one behind.
        lag = _hours(facts.newest_hour + HOUR - facts.newest_target_hour)
        status = "ok" if lag <= 0 else ("warn" if lag <= settings.stale_after_hours else "error")
        checks.append(Check("last_cycle", status,
                            f"newest forecast for {facts.newest_target_hour:%Y-%m-%d %H:%M} UTC, "
                            f"{max(lag, 0)} h behind the newest candle"))
    availability = _share(facts.model_24h, facts.expected_24h)
    if availability is not None:
        status = "ok" if availability >= settings.min_availability_24h else "error"
        checks.append(Check("availability_24h", status,
                            f"{facts.model_24h} of {facts.expected_24h} trailing hours served by the model "
                            f"(error below {settings.min_availability_24h:.0%})"))
    if facts.production_model is None:
        checks.append(Check("production_model", "error", "no model forecast recorded"))
    else:
        kind = facts.production_kind or "unknown kind"
        status = "warn" if kind.startswith("naive_") else "ok"
        checks.append(Check("production_model", status, f"{facts.production_model} ({kind})"))
    if facts.skill_168h is None or (facts.n_168h or 0) < MIN_HOURS_FOR_SKILL:
        checks.append(Check("skill_168h", "ok", f"{facts.n_168h or 0} realized hours: too few to judge"))
    else:
        status = "error" if facts.skill_168h < settings.min_skill_168h else "ok"
        checks.append(Check("skill_168h", status,
                            f"{facts.skill_168h:+.4f} against persistence over {facts.n_168h} realized hours "
                            f"(error below {settings.min_skill_168h:+.4f})"))
    if facts.coverage_80_168h is not None and (facts.n_168h or 0) >= MIN_HOURS_FOR_SKILL:
        low, high = COVERAGE_BAND
        status = "ok" if low <= facts.coverage_80_168h <= high else "warn"
        checks.append(Check("coverage_80_168h", status,
                            f"{facts.coverage_80_168h:.3f} of realized closes inside the 80% interval "
                            f"(warn outside {low:.2f}-{high:.2f})"))
    return checks


def report(all_facts: list[HealthFacts], now: datetime, settings: ApiSettings) -> dict[str, object]:
    """The body of ``/v1/health``: overall status and, per product, its figures and checks."""
    products = []
    for facts in all_facts:
        checks = product_checks(facts, now, settings)
        products.append({
            "product_id": facts.product_id,
            "status": worst([c.status for c in checks]),
            "newest_hour": facts.newest_hour,
            "newest_target_hour": facts.newest_target_hour,
            "last_cycle_at": facts.last_cycle_at,
            "availability_24h": _share(facts.model_24h, facts.expected_24h),
            "availability_168h": _share(facts.model_168h, facts.expected_168h),
            "production_model": facts.production_model,
            "production_kind": facts.production_kind,
            "skill_168h": facts.skill_168h,
            "coverage_80_168h": facts.coverage_80_168h,
            "last_promoted_at": facts.last_promoted_at,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
        })
    overall = worst([str(p["status"]) for p in products]) if products else "error"
    return {"status": overall, "checked_at": naive_utc(now), "products": products}
