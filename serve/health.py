"""Is the pipeline healthy, per product? The dbt health mart's judgement, plus the one check it cannot make.

``product_health`` (built by the hourly cycle's health step) rates each product as of the cycle's hour: raw
data lag, forecast availability, the production model's trailing skill and interval coverage, with the
thresholds of ``dbt_project.yml`` (vars ``health_*``). It cannot tell that the cycle has stopped: a mart built
at 13:05 says ``ok`` forever. So the API adds ``cycle``: the mart's hour against the caller's clock (the current
hour, whose forecast the last cycle made), an error beyond ``CANDLECAST_API_STALE_AFTER_HOURS``.

Each check is ``ok``, ``warn`` or ``error``; a product's status is the worse of the mart's and ``cycle``; the
answer's the worst product's. The API answers 200 unless it is ``error`` (503), so a load balancer can act on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from candlecast.hours import HOUR, floor_hour, naive_utc
from candlecast.settings import ApiSettings
from serve.marts import Row

LEVELS = ("ok", "warn", "error")
# The mart's checks (the columns its failing_checks names) and the severity its status gives each.
SEVERITY = {"raw_lag_hours": "error", "skill_168h": "error", "coverage_80_168h": "warn", "availability_24h": "warn"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def worst(statuses: list[str]) -> str:
    return max(statuses, key=LEVELS.index, default="ok")


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "never"


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1%}"


def product_checks(row: Row, now: datetime, settings: ApiSettings) -> list[Check]:
    """The checks of one product at ``now`` (aware or naive UTC)."""
    failing = set(filter(None, (row["failing_checks"] or "").replace(" ", "").split(",")))

    def judged(name: str) -> str:
        return SEVERITY.get(name, "error") if name in failing else "ok"

    current = naive_utc(floor_hour(now))
    behind = int((current - row["cycle_hour"]) / HOUR)
    checks = [
        Check("cycle", "error" if behind > settings.stale_after_hours else "ok",
              f"health as of the cycle of {_when(row['cycle_hour'])}, {max(behind, 0)} h before the current hour "
              f"{_when(current)} (error beyond {settings.stale_after_hours} h)"),
        Check("raw_lag_hours", judged("raw_lag_hours"),
              f"newest candle {_when(row['newest_raw_hour'])}, {row['raw_lag_hours']} h behind the cycle's hour"),
        Check("availability_24h", judged("availability_24h"),
              f"{row['available_24h']} of {row['expected_24h']} trailing hours served ({row['fallbacks_24h']} by a "
              f"fallback): {_share(row['availability_24h'])}"),
    ]
    if row["production_model_version"] is None:
        checks.append(Check("production_model", "ok", "no production model"))
    else:
        baseline = ", a naive baseline" if row["is_production_baseline"] else ""
        checks.append(Check("production_model", "ok",
                            f"{row['production_model_version']} ({row['production_model_kind']}{baseline}), "
                            f"promoted {row['hours_since_promotion']} h before the cycle's hour"))
    skill = row["skill_168h"]
    checks.append(Check("skill_168h", judged("skill_168h"),
                        f"{'n/a' if skill is None else format(float(skill), '+.4f')} against persistence over "
                        f"{row['realized_168h']} realized hours"))
    checks.append(Check("coverage_80_168h", judged("coverage_80_168h"),
                        f"{_share(row['coverage_80_168h'])} of realized closes inside the 80% interval"))
    return checks


def report(rows: list[Row], now: datetime, settings: ApiSettings) -> dict[str, object]:
    """The body of ``/v1/health``: overall status and, per product, the mart's figures and the checks."""
    products = []
    for row in rows:
        checks = product_checks(row, now, settings)
        products.append({
            **{k: v for k, v in row.items() if k not in ("status", "failing_checks")},
            "status": worst([str(row["status"]), *(c.status for c in checks)]),
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
        })
    overall = worst([str(p["status"]) for p in products]) if products else "error"
    return {"status": overall, "checked_at": naive_utc(now), "products": products}
