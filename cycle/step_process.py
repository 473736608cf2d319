"""A Python step of the cycle in a process of its own, holding only its role's password.

The cycle command and an Airflow task are launchers: they know every role's login (the credentials file, or
the task's Airflow Connection), so the code that talks to the Coinbase API, parses its answers, loads models
and writes tables does not run in them. Each Python step (extract as ``loader``, predict and the weekly ML
steps as ``ml``) runs as ``python -m cycle.run_step NAME ...`` with an environment cut down by
``candlecast.role_env`` to its own role's password and pointed away from the credentials file; dbt steps are
already processes of their own (``candlecast.dbt_runner`` cuts their environment to the transformer's).

The launcher hands over the step's name, interval, products, model store and the steps that failed before it
as arguments (no secret among them); the step's process answers with one JSON document on its standard
output: the step's summary, or the error it raised (its type and message, which the launcher raises again
as ``StepProcessError`` so that the cycle reports it as if it had run in-process). Its logs go to standard
error, which it shares with the launcher (the terminal, the cron log, the Airflow task log). It inherits the
cycle's lock (``RunContext.inherit_fds``, named in its arguments so that it hands it on to a dbt of its own),
so a step process, or its dbt, that outlives a killed cycle keeps the next one waiting.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cycle.context import Interval, RunContext
    from cycle.steps import Step, Summary

MODULE = "cycle.run_step"  # the step's side; nothing imports it


class StepProcessError(RuntimeError):
    """A step failed in its own process: ``error_type`` is the type of what it raised there (or says how the
    process died), the message is its message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def error_name(exc: BaseException) -> str:
    """The type name to report for a step's error: the one raised in the step's own process, if it ran in one."""
    return exc.error_type if isinstance(exc, StepProcessError) else type(exc).__name__


def command(step: Step, ctx: RunContext, interval: Interval) -> list[str]:
    argv = [sys.executable, "-m", MODULE, step.name, "--start", interval.start.isoformat(),
            "--end", interval.end.isoformat(), "--model-store", str(ctx.model_store),
            "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel())]
    for product in ctx.products:
        argv += ["--product", product]
    for failed in ctx.failed_steps:
        argv += ["--failed", failed]
    for fd in ctx.inherit_fds:  # the cycle's lock: the step hands it on to the dbt it starts (the health step)
        argv += ["--inherit-fd", str(fd)]
    if ctx.dbt_manifest is not None:  # the cycle's own dbt wrote it: the ML steps read the feature lineage there
        argv += ["--dbt-manifest", str(ctx.dbt_manifest)]
    return argv


def run_in_own_process(step: Step, ctx: RunContext, interval: Interval) -> Summary:
    """Run ``step`` over ``interval`` in a child process holding only ``step.role``'s password; its summary.

    Raises ``StepProcessError`` with the step's own error (type and message), or naming how the process died.
    """
    from candlecast.role_env import role_env

    env = role_env(step.role, ctx.env)
    proc = subprocess.run(command(step, ctx, interval), env=env, stdout=subprocess.PIPE, stderr=None,
                          pass_fds=ctx.inherit_fds, check=False)
    answer = _answer(proc.stdout)
    if answer is None:
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
        raise StepProcessError("StepProcessDied", f"the {step.name} step's process ({MODULE}, role {step.role}) "
                                                  f"{how} without an answer; its output is in the log above")
    if "error" in answer:
        raise StepProcessError(str(answer["error"]["type"]), str(answer["error"]["message"]))
    summary: Summary = answer["summary"]
    return summary


def run_in_processes(step: Step, ctx: RunContext, interval: Interval) -> Summary:
    """``step`` in up to ``ctx.workers`` processes at once (``run_in_own_process``), each with every
    ``workers``-th product (a heavy product and light ones share out evenly); the summaries in the products' order.

    Every share runs to its end. One share's failure is raised as it is, several as one ``StepProcessError``
    naming each; the other shares' work is written either way."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    shares = [ctx.products[i::ctx.workers] for i in range(ctx.workers) if ctx.products[i::ctx.workers]]
    if len(shares) <= 1:
        return run_in_own_process(step, ctx, interval)
    with ThreadPoolExecutor(len(shares), thread_name_prefix=f"{step.name}-share") as pool:
        futures = [pool.submit(run_in_own_process, step, replace(ctx, products=share), interval) for share in shares]
    summary: Summary = []
    errors: list[StepProcessError] = []
    for future in futures:
        try:
            summary.extend(future.result())
        except StepProcessError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        types = {e.error_type for e in errors}
        raise StepProcessError(types.pop() if len(types) == 1 else "ProductsFailed", "; ".join(map(str, errors)))
    order = {product: i for i, product in enumerate(ctx.products)}
    return sorted(summary, key=lambda s: order.get(str(s.get("product") or s.get("product_id")), len(order)))


def _answer(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout.decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    try:
        answer = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) and ("summary" in answer or "error" in answer) else None
