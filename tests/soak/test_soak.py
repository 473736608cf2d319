"""Unattended operation, replayed: hourly cycles through an outage, a missing, a late and a corrected candle,
a truncated answer, a MariaDB restart and a cycle SIGKILLed in its dbt step (issue 10).

`make test` runs the short plan (ten hours, every fault, cycles in-process but the killed one);
``CANDLECAST_SOAK=fortnight`` runs the fortnight here (336 cycles as processes, 24 through Airflow); `make soak` runs
it through bench/bench_soak.py, which checks the same (``tools.soak.run.verdicts``) and prints the figures.
A private MariaDB (``.local/test-soak``, port ``CANDLECAST_TEST_SOAK_DB_PORT``, default 3410) is restarted by
the soak, so the shared test server is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.soak.harness import SoakConfig
from tools.soak.plan import SoakPlan
from tools.soak.run import Findings, run_soak

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SOAK = os.environ.get("CANDLECAST_SOAK", "short")  # "short", "fortnight", or a number of days
FORTNIGHT = SOAK != "short"


@pytest.fixture(scope="module")
def findings() -> Iterator[Findings]:
    plan = SoakPlan.short() if not FORTNIGHT else SoakPlan.days(14 if SOAK == "fortnight" else int(SOAK))
    config = SoakConfig(
        work_dir=REPO_ROOT / ".local" / ("soak" if FORTNIGHT else "test-soak"),
        db_port=int(os.environ.get("CANDLECAST_TEST_SOAK_DB_PORT", "3410")),
        base="ct_soak", mode="process" if FORTNIGHT else "inline",
    )
    yield run_soak(plan, config)


def test_every_fault_happened(findings: Findings) -> None:
    by_fault = {c.fault: c for c in findings.cycles if c.fault}
    assert findings.kill_landed, "the killed cycle should have died inside its dbt step"
    assert [a.status for a in by_fault["SIGKILL in dbt"].attempts] == ["killed", "ok"]
    outage = [c for c in findings.cycles if c.fault == "outage"]
    assert len(outage) == findings.plan.outage_hours and not any(c.ok for c in outage)
    assert findings.faults_fired["truncated"] == 1
    truncated = next(c for c in findings.cycles if c.fault == "truncated answer")
    assert [a.status for a in truncated.attempts] == ["ok"]  # retried inside the extract step


def test_forecasts_are_available_for_at_least_99_percent_of_the_hours_the_api_served(findings: Findings) -> None:
    a = findings.availability
    # the outage hours, the missing and the late candle were not served at cycle time
    assert a.served <= findings.plan.hours - findings.plan.outage_hours - 2
    assert a.ratio >= 0.99, f"{a.forecast}/{a.served} hours with a model forecast; without one: {a.missing}"


def test_the_hour_after_a_missing_one_is_forecast_by_the_model_at_once(findings: Findings) -> None:
    first, missing = findings.first_outcomes, findings.plan.missing_at
    never, after = first[missing], first[missing + 1]
    assert never is not None and never.outcome == "fallback" and never.reason_code == "candle_missing"
    assert after is not None and after.outcome == "model"


def test_every_hour_has_a_forecast_or_a_labelled_outcome(findings: Findings) -> None:
    assert findings.unlabelled == []


def test_the_raw_table_equals_what_the_api_finally_published(findings: Findings) -> None:
    # the late candle and the corrected one included, the never-published hour left out
    assert findings.truth_differences == []


def test_no_extract_run_is_left_running(findings: Findings) -> None:
    assert findings.running_after_soak == 0
    assert findings.running_after_rerun == 0


def test_re_running_the_labelled_hours_gives_forecasts_where_the_candle_came_back(findings: Findings) -> None:
    plan = findings.plan
    came_back = [*range(plan.outage_at, plan.outage_at + plan.outage_hours), plan.late_at]
    after = findings.after_heal
    assert {k: (o.outcome if (o := after[k]) else None) for k in came_back} == {k: "model" for k in came_back}
    never = after[plan.missing_at]  # still no candle: still the labelled fallback
    assert never is not None and never.outcome == "fallback" and never.reason_code == "candle_missing"


def test_re_running_every_hour_changes_nothing_but_forecasts_made_before_a_correction(findings: Findings) -> None:
    # A candle corrected a day later changes the feature rows of the hours after it: forecasts made before
    # the correction are made again from the corrected data. Nothing else may change, and after that, nothing.
    assert findings.reran == findings.plan.hours
    assert findings.rerun_changes == []
    assert findings.second_rerun_changes == []


def test_the_feature_mart_equals_a_full_refresh(findings: Findings) -> None:
    assert findings.full_refresh_changes == []


def test_a_cycle_whose_only_failed_step_is_health_is_unhealthy_not_failed() -> None:
    """What the soak reads from a cycle command's output (process mode) to tell a verdict from a failure."""
    from tools.soak.harness import failed_steps_in, only_health_failed

    unhealthy = ("hourly cycle 2024-01-08 12:00..2024-01-08 13:00 UTC, products BTC-USD\n"
                 "extract   ok        0.8 s  BTC-USD ...\nfeatures  ok        3.1 s  dbt build ...\n"
                 "predict   ok        1.2 s  BTC-USD ...\naccuracy  ok        2.9 s  dbt build ...\n"
                 "health    failed    3.0 s  HealthCheckFailed: ... skill_168h = -0.30 ...\n")
    outage = unhealthy.replace("extract   ok ", "extract   failed ")
    assert failed_steps_in(unhealthy) == {"health"} and only_health_failed(failed_steps_in(unhealthy))
    assert failed_steps_in(outage) == {"extract", "health"} and not only_health_failed(failed_steps_in(outage))
