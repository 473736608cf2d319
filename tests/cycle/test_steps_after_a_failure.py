"""``cycle.run.run_steps`` after a failed step: the steps marked ``runs_after_failure`` still run (told what
failed), the first unmarked one stops the cycle, and the cycle fails naming the first failure. Pure logic:
steps of the test's own, no database (the same loop runs the real cycles; tests/cycle runs those end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cycle.context import Interval, RunContext
from cycle.run import StepFailed, StepOutcome, run_steps
from cycle.steps import HOURLY_STEPS, WEEKLY_STEPS, Step
from tests.cycle.conftest import FIRST_HOUR


def recording(name: str, seen: dict[str, tuple[str, ...]], fails: bool = False, after_failure: bool = False) -> Step:
    def run(ctx: RunContext, interval: Interval) -> list[dict[str, str]]:
        seen[name] = ctx.failed_steps
        if fails:
            raise RuntimeError(f"{name} broke")
        return [{"step": name}]

    return Step(name, "ml", run, lambda summary: "done", runs_after_failure=after_failure)


def test_marked_steps_run_after_a_failure_until_an_unmarked_one_and_the_first_failure_is_reported(
        tmp_path: Path) -> None:
    seen: dict[str, tuple[str, ...]] = {}
    steps = (recording("fetch", seen, fails=True), recording("build", seen, after_failure=True),
             recording("score", seen, fails=True, after_failure=True), recording("train", seen),
             recording("report", seen, after_failure=True))
    printed: list[StepOutcome] = []
    ctx = RunContext(env={"CANDLECAST_LOCAL_DIR": str(tmp_path), "CANDLECAST_DB_SCHEMA": "ct_steps"},
                     products=("BTC-USD",), model_store=tmp_path)
    with pytest.raises(StepFailed) as failed:
        run_steps("hourly", steps, ctx, Interval.hour_ending(FIRST_HOUR), on_step=printed.append)
    assert failed.value.step == "fetch" and "failed at step fetch: RuntimeError: fetch broke" in str(failed.value)
    assert [(o.name, o.status) for o in failed.value.outcomes] == [
        ("fetch", "failed"), ("build", "ok"), ("score", "failed")]
    assert printed == failed.value.outcomes
    # each step that ran after a failure knew which ones had failed; nothing ran past the unmarked step
    assert seen == {"fetch": (), "build": ("fetch",), "score": ("fetch",)}


def test_the_hourly_cycle_forecasts_after_a_failed_extract_and_the_retrain_stops_at_its_first_failure() -> None:
    assert [s.name for s in HOURLY_STEPS if s.runs_after_failure] == ["features", "predict", "accuracy", "health"]
    assert not any(s.runs_after_failure for s in WEEKLY_STEPS)
