"""A whole soak, start to finish, and its findings: what the tests assert and the benchmark prints.

1. set-up: private MariaDB, history, a production model (``Soak.setup``);
2. the soak itself: one cycle per replayed hour with the plan's faults; availability, outcomes, the raw table
   against the API's final truth and the run log are measured right after it;
3. healing: the cycles left with a labelled fallback are re-run once the data is back (what an operator does);
4. re-running the whole soak: nothing may change;
5. a full refresh of the feature chain: the incremental mart must equal it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from candlecast.hours import naive_utc
from tools.soak import checks
from tools.soak.harness import CycleRun, Soak, SoakConfig
from tools.soak.plan import SoakPlan

# The fault-free cycles a fault cycle is compared with: those within this many hours (cycles) of it.
NEIGHBOUR_HOURS = 12


@dataclass
class Findings:
    plan: SoakPlan
    cycles: list[CycleRun]
    availability: checks.Availability
    outcome_counts: dict[str, int]
    unlabelled: list[datetime]
    truth_differences: list[str]
    running_after_soak: int
    kill_landed: bool
    faults_fired: dict[str, int]  # answers the replay server spoiled on purpose, by kind
    healed: list[int] = field(default_factory=list)  # the cycles whose hours were re-run to heal them
    heal_seconds: float = 0.0
    first_outcomes: dict[int, checks.Outcome | None] = field(default_factory=dict)  # by cycle, as the soak left them
    after_heal: dict[int, checks.Outcome | None] = field(default_factory=dict)  # by cycle
    rerun_changes: list[str] = field(default_factory=list)  # beyond the forecasts a correction reached
    second_rerun_changes: list[str] = field(default_factory=list)
    remade_forecasts: int = 0
    rerun_seconds: float = 0.0
    reran: int = 0
    running_after_rerun: int = 0
    full_refresh_changes: list[str] = field(default_factory=list)
    setup_seconds: float = 0.0

    # --- timing ------------------------------------------------------------------------------------------

    def cycle_seconds(self, via: str | None = None) -> list[float]:
        return [c.seconds for c in self.cycles if via is None or c.via == via]

    def fault_free_seconds(self) -> list[float]:
        """Cycles untouched by any fault (and not the one after a fault, which catches up), run one way."""
        hit = {c.k for c in self.cycles if c.fault} | {c.k + 1 for c in self.cycles if c.fault}
        return [c.seconds for c in self.cycles if c.k not in hit and c.via != "airflow" and c.ok
                and len(c.attempts) == 1]

    def fault_cycle_ratios(self, window_hours: int = NEIGHBOUR_HOURS) -> dict[int, float]:
        return fault_cycle_ratios(self.cycles, window_hours)

    def timing(self) -> dict[str, float]:
        every = [c.seconds for c in self.cycles if c.via != "airflow"]
        clean = self.fault_free_seconds()
        baseline = statistics.median(clean) if clean else float("nan")
        median, p95 = statistics.median(every), _percentile(every, 95)
        fault_ratios = self.fault_cycle_ratios()
        return {"median_s": median, "p95_s": p95, "fault_free_median_s": baseline,
                "median_ratio": median / baseline, "p95_ratio": p95 / baseline,
                "fault_cycle_worst_ratio": max(fault_ratios.values(), default=float("nan"))}

    def as_dict(self) -> dict[str, Any]:
        return {"availability": self.availability.ratio, "served": self.availability.served,
                "forecast": self.availability.forecast, "outcomes": self.outcome_counts, **self.timing()}


def fault_cycle_ratios(cycles: list[CycleRun], window_hours: int = NEIGHBOUR_HOURS) -> dict[int, float]:
    """Each fault-touched cycle's slowest attempt against the median of the fault-free cycles within
    ``window_hours`` of it, by cycle: the fault's own cost, not the machine's speed that day (on a VM it drifts by
    a quarter over hours with nothing else running, which moves the fortnight's p95 as much as a fault).

    Fault-touched: the cycle a fault hit and the one after it (which catches up); fault-free: every other cycle
    run as a process that succeeded at its first attempt.
    """
    hit = {c.k for c in cycles if c.fault} | {c.k + 1 for c in cycles if c.fault}
    clean = {c.k: c.seconds for c in cycles if c.k not in hit and c.via != "airflow" and c.ok
             and len(c.attempts) == 1}
    ratios = {}
    for c in cycles:
        if c.k not in hit or c.via == "airflow" or not c.attempts:
            continue
        near = [s for k, s in clean.items() if abs(k - c.k) <= window_hours]
        if near:
            ratios[c.k] = max(a.seconds for a in c.attempts) / statistics.median(near)
    return ratios


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run_soak(plan: SoakPlan, config: SoakConfig, on_cycle: Callable[[CycleRun], None] | None = None,
             rerun: bool = True) -> Findings:
    """Run a soak and collect its findings; the private MariaDB is stopped at the end (its data stays under
    ``config.work_dir`` for inspection: ``python -m candlecast.mariadb start`` with that dir and port)."""
    import time

    soak = Soak(plan, config, on_cycle)
    try:
        started = time.perf_counter()
        soak.setup()
        setup_seconds = time.perf_counter() - started
        soak.run()
        counts: dict[str, int] = {}
        for got in checks.outcomes(soak).values():
            counts[got.outcome] = counts.get(got.outcome, 0) + 1
        findings = Findings(
            plan=plan, cycles=soak.cycles, availability=checks.availability(soak), outcome_counts=counts,
            unlabelled=checks.unlabelled_hours(soak), truth_differences=checks.truth_differences(soak),
            running_after_soak=checks.running_runs(soak), kill_landed=soak.kill_landed, setup_seconds=setup_seconds,
            faults_fired=dict(Counter(r.fault for r in soak.server.requests if r.fault)),
        )
        first = checks.outcomes(soak)
        findings.first_outcomes = {k: first.get(naive_utc(plan.end(k))) for k in range(plan.hours)}
        findings.healed = checks.fallback_cycles(soak)
        findings.heal_seconds = soak.heal(findings.healed)
        healed = checks.outcomes(soak)
        findings.after_heal = {k: healed.get(naive_utc(plan.end(k))) for k in range(plan.hours)}
        if rerun:
            # The first re-run may only remake the forecasts a correction reached after they were made;
            # the second must change nothing at all.
            before = checks.snapshot(soak)
            findings.rerun_seconds = soak.rerun_all()
            once = checks.snapshot(soak)
            findings.rerun_changes = checks.snapshot_differences(before, once, checks.correction_window(soak))
            outcomes_table = f"{soak.schemas.ml}.forecast_outcomes"
            if outcomes_table in before and outcomes_table in once:
                findings.remade_forecasts = len(before[outcomes_table].rows - once[outcomes_table].rows)
            soak.rerun_all()
            findings.second_rerun_changes = checks.snapshot_differences(once, checks.snapshot(soak))
            findings.reran = plan.hours
            findings.running_after_rerun = checks.running_runs(soak)
        mart = f"{soak.schemas.marts}.fct_candle_features"
        incremental = {mart: checks.feature_mart(soak)}
        checks.full_refresh_features(soak)
        findings.full_refresh_changes = checks.snapshot_differences(incremental, {mart: checks.feature_mart(soak)})
        return findings
    finally:
        soak.close()
        soak.stop_database()


def _outcome(o: checks.Outcome | None) -> str:
    return "none" if o is None else f"{o.outcome}/{o.reason_code}" if o.reason_code else o.outcome


def verdicts(f: Findings) -> list[tuple[str, bool, str]]:
    """Each check of the soak: (what, holds, figure); the same as tests/soak asserts, so the benchmark's run of
    the fortnight is a run of `make soak` too."""
    a, plan = f.availability, f.plan
    by_fault = {c.fault: c for c in f.cycles if c.fault}
    outage = [c for c in f.cycles if c.fault == "outage"]
    killed = [at.status for at in by_fault["SIGKILL in dbt"].attempts] if "SIGKILL in dbt" in by_fault else []
    truncated = [at.status for at in by_fault["truncated answer"].attempts] if "truncated answer" in by_fault else []
    never, after = f.first_outcomes.get(plan.missing_at), f.first_outcomes.get(plan.missing_at + 1)
    came_back = [*range(plan.outage_at, plan.outage_at + plan.outage_hours), plan.late_at]
    healed = {k: _outcome(f.after_heal.get(k)) for k in [*came_back, plan.missing_at]}
    return [
        ("every fault happened", len(outage) == plan.outage_hours and not any(c.ok for c in outage)
         and f.faults_fired.get("truncated") == 1 and truncated == ["ok"] and killed == ["killed", "ok"],
         f"outage cycles {len(outage)} failed; truncated answers {f.faults_fired.get('truncated', 0)}, that cycle "
         f"{truncated}; killed cycle {killed}"),
        ("the never-published hour gets a labelled fallback, the hour after it the model's forecast at once",
         never is not None and never.outcome == "fallback" and never.reason_code == "candle_missing"
         and after is not None and after.outcome == "model", f"{_outcome(never)}, then {_outcome(after)}"),
        ("re-running the labelled hours gives the model's forecast where the candle came back",
         all(healed[k] == "model" for k in came_back) and healed[plan.missing_at] == "fallback/candle_missing",
         ", ".join(f"cycle {k}: {v}" for k, v in healed.items())),
        ("forecast availability >= 99%", a.ratio >= 0.99,
         f"{a.ratio:.2%} ({a.forecast}/{a.served}; without: {[f'{h:%m-%d %H:%M}' for h in a.missing]})"),
        ("every hour has a forecast or a labelled outcome", not f.unlabelled, f"outcomes {f.outcome_counts}"),
        ("raw table equals the API's final truth", not f.truth_differences, "; ".join(f.truth_differences) or "equal"),
        ("no extract run left running", f.running_after_soak == 0 and f.running_after_rerun == 0,
         f"{f.running_after_soak} after the soak, {f.running_after_rerun} after the re-run"),
        ("the SIGKILL landed in the dbt step", f.kill_landed, ""),
        ("re-running every hour changes nothing but the forecasts a correction reached", not f.rerun_changes,
         f"{f.reran} hours re-run in {f.rerun_seconds:.0f} s, {f.remade_forecasts} forecasts remade; "
         + ("; ".join(f.rerun_changes) or "nothing else changed")),
        ("re-running every hour again changes nothing", not f.second_rerun_changes,
         "; ".join(f.second_rerun_changes) or "no change"),
        ("feature mart equals a full refresh", not f.full_refresh_changes,
         "; ".join(f.full_refresh_changes) or "equal"),
    ]


def print_verdicts(findings: Findings) -> bool:
    """Print each check as PASS/FAIL with its figure (the command and the benchmark); True when all hold."""
    ok = True
    for what, holds, figure in verdicts(findings):
        ok &= holds
        print(f"{'PASS' if holds else 'FAIL'}  {what}: {figure}")
    return ok
