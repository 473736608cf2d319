"""Run a whole cycle in order: the hourly one (extract → dbt features → predict → dbt accuracy → health) and the
weekly retrain (dbt features → train → evaluate → promote), exactly the steps of the two DAGs.

The caller gives the time (``end``: the end of the interval, exclusive, like Airflow's data interval end);
nothing in here reads the clock. A step that fails fails the cycle: ``StepFailed`` names the first failed step
and carries the outcomes of every step run. The steps after a failure still run when they are marked
``runs_after_failure`` (Airflow's ``trigger_rule="all_done"``: the hourly cycle's dbt builds and forecast, so
an API outage still gets its hour a labelled fallback forecast); the first step not so marked stops the cycle
there. Every step is idempotent, so running the same ``end`` again changes nothing, and the next run heals
what this one could not do.

Two cycles on one database base would write the same dbt tables at once (dbt-mysql then fails on
``__dbt_tmp already exists``), so a cycle holds a lock file per base for its whole run; a second one waits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from candlecast.hours import floor_hour
from cycle.context import Interval, RunContext, schema_base
from cycle.step_process import error_name
from cycle.steps import HOURLY_STEPS, WEEKLY_STEPS, Step, dbt_manifest

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
# A weekly retrain takes about a minute here and an hourly cycle seconds; half an hour of waiting means the
# other cycle is stuck, which is worth an error rather than a queue of cron jobs.
DEFAULT_LOCK_TIMEOUT_S = 1800.0


class CycleError(RuntimeError):
    """The cycle could not run or did not complete."""


@dataclass(frozen=True)
class StepOutcome:
    """How one step went: ``ok`` with its summary, or ``failed`` with the error."""

    name: str
    status: str  # "ok" or "failed"
    seconds: float
    summary: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""  # the summary on one line, or the error's first line

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def line(self) -> str:
        return f"{self.name:<9} {self.status:<6} {self.seconds:6.1f} s  {self.detail}"


class StepFailed(CycleError):
    """A step of the cycle raised; ``step`` names the first that did, ``outcomes`` holds every step run, in
    order (those that ran after the failure included)."""

    def __init__(self, cycle: str, interval: Interval, step: str, outcomes: list[StepOutcome],
                 cause: BaseException) -> None:
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        super().__init__(f"{cycle} cycle {interval} failed at step {step}: {error_name(cause)}: {first_line}")
        self.cycle, self.interval, self.step, self.outcomes = cycle, interval, step, outcomes


@dataclass(frozen=True)
class CycleResult:
    cycle: str  # "hourly" or "weekly"
    interval: Interval
    outcomes: list[StepOutcome]

    @property
    def seconds(self) -> float:
        return sum(o.seconds for o in self.outcomes)

    def step(self, name: str) -> StepOutcome:
        return next(o for o in self.outcomes if o.name == name)


OnStep = Callable[[StepOutcome], None]


def lock_path(env: Mapping[str, str]) -> Path:
    from candlecast.settings import local_dir

    return local_dir(env) / "cycle" / f"{schema_base(env)}.lock"


@contextmanager
def cycle_lock(path: Path, timeout_s: float) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path``; yields its file descriptor.

    The kernel drops the lock when the last descriptor of it closes: when the cycle ends, or dies, even by
    SIGKILL, so a killed cycle never blocks the next one for good. Child processes given the descriptor
    (dbt, through ``RunContext.inherit_fds``) hold it too: a dbt still writing tables after its cycle was
    killed keeps the next cycle waiting until it is done, instead of both writing the same tables.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "unknown"
                    raise CycleError(f"another cycle on this base still holds {path} after {timeout_s:.0f} s "
                                     f"(pid {holder}); is it stuck?") from None
                time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield fh.fileno()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_steps(cycle: str, steps: Sequence[Step], ctx: RunContext, interval: Interval,
              on_step: OnStep | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> CycleResult:
    """Run ``steps`` in order over ``interval``; raise ``StepFailed`` naming the first that failed.

    After a failure, the steps marked ``runs_after_failure`` still run (told which failed, through
    ``RunContext.failed_steps``); the first one not marked ends the run there, and it and the rest are not run.
    """
    outcomes: list[StepOutcome] = []
    first_failure: tuple[str, BaseException] | None = None
    with cycle_lock(lock_path(ctx.env), lock_timeout_s) as lock_fd:
        # The ML steps read the feature lineage from the manifest this cycle's dbt steps write: the project that
        # built the tables they read.
        ctx = replace(ctx, inherit_fds=(*ctx.inherit_fds, lock_fd),
                      dbt_manifest=ctx.dbt_manifest or dbt_manifest(ctx.env))
        log.info("%s cycle %s: %s", cycle, interval, ", ".join(s.name for s in steps))
        for step in steps:
            if first_failure is not None and not step.runs_after_failure:
                break
            started = time.perf_counter()
            try:
                summary = step.execute(ctx, interval)
            except Exception as exc:
                seconds = time.perf_counter() - started
                first_line = (str(exc).strip().splitlines() or [""])[0]
                outcome = StepOutcome(step.name, "failed", seconds, detail=f"{error_name(exc)}: {first_line}")
                outcomes.append(outcome)
                if on_step:
                    on_step(outcome)
                # The caller reports it (StepFailed); the traceback is for whoever asked for INFO logs.
                log.info("%s cycle %s: step %s failed", cycle, interval, step.name, exc_info=True)
                first_failure = first_failure or (step.name, exc)
                ctx = replace(ctx, failed_steps=(*ctx.failed_steps, step.name))
                continue
            outcome = StepOutcome(step.name, "ok", time.perf_counter() - started, summary, step.describe(summary))
            outcomes.append(outcome)
            if on_step:
                on_step(outcome)
    if first_failure is not None:
        failed_step, cause = first_failure
        raise StepFailed(cycle, interval, failed_step, outcomes, cause) from cause
    return CycleResult(cycle, interval, outcomes)


def run_hourly(end_hour: datetime, ctx: RunContext | None = None, *, env: Mapping[str, str] | None = None,
               on_step: OnStep | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> CycleResult:
    """The hourly DAG's run for the interval ``[end_hour - 1 h, end_hour)``: fetch the closed hour(s), build the
    features, forecast the hour that starts at ``end_hour``, build the accuracy marts, check health.

    ``end_hour`` is floored to the hour (naive means UTC). ``ctx`` defaults to ``RunContext.resolve(env)``.
    """
    ctx = ctx or RunContext.resolve(env)
    return run_steps("hourly", HOURLY_STEPS, ctx, Interval.hour_ending(end_hour), on_step, lock_timeout_s)


def run_weekly(end: datetime, ctx: RunContext | None = None, *, env: Mapping[str, str] | None = None,
               on_step: OnStep | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> CycleResult:
    """The weekly retrain DAG's run for the week ending at ``end`` (floored to the hour): build the features,
    train on hours before ``end - CANDLECAST_HOLDOUT_HOURS``, score every stored model on that holdout,
    promote the best."""
    ctx = ctx or RunContext.resolve(env)
    end = floor_hour(end)
    return run_steps("weekly", WEEKLY_STEPS, ctx, Interval(end - WEEK, end), on_step, lock_timeout_s)
