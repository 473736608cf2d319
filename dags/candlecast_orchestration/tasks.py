"""What the DAGs' Python tasks do: run one step of the cycle (``cycle.steps``) in the run's context.

The steps are the same functions the cycle command (``python -m cycle``) runs; what is Airflow's own is
only how a task finds its context: the task's environment, with the Airflow Connection of the step's role laid
over it when ``CANDLECAST_AIRFLOW_CONN_PREFIX`` is set, and the Airflow Variables naming the products and the
model store (each falling back to the env var the command reads). The times come from the run's data interval.
Nothing here is imported at DAG parse time: the TaskFlow tasks import it when they run, so pandas,
SQLAlchemy and LightGBM stay out of the DAG processor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from candlecast.settings.dags import VAR_MODEL_STORE, VAR_PRODUCTS, conn_id, connection_env

if TYPE_CHECKING:
    from candlecast.settings import Role
    from cycle.context import RunContext


def airflow_variables() -> dict[str, str | None]:
    """The run-time Variables, read inside a running task (never at parse time)."""
    from airflow.sdk import Variable

    return {name: Variable.get(name, default=None) for name in (VAR_PRODUCTS, VAR_MODEL_STORE)}


def task_env(role: Role, conn_prefix: str | None) -> dict[str, str]:
    """The environment a task reads its DB settings from: the process env, or the Airflow Connection
    ``{conn_prefix}_{role}`` laid over it when connections are in use."""
    env = dict(os.environ)
    if not conn_prefix:
        return env
    from airflow.sdk import Connection

    env.update(connection_env(role, Connection.get(conn_id(conn_prefix, role))))
    return env


def run_context(role: Role, conn_prefix: str | None) -> RunContext:
    """The one place a task resolves what it works on (Variables win over env vars)."""
    from candlecast.inputs import folder_within
    from candlecast.settings import local_dir
    from cycle.context import RunContext, parse_products

    variables = airflow_variables()
    raw_products = variables.get(VAR_PRODUCTS)
    products = None if raw_products is None else parse_products(raw_products, f"Airflow Variable {VAR_PRODUCTS}")
    env = task_env(role, conn_prefix)
    # Any UI user with edit rights sets Variables: the store they name must stay inside the local dir.
    store = variables.get(VAR_MODEL_STORE) or None
    if store is not None:
        store = str(folder_within(store, local_dir(env), f"Airflow Variable {VAR_MODEL_STORE}"))
    return RunContext.resolve(env, products=products, model_store=store)


def product_batches(batch_size: int) -> list[list[str]]:
    """The run's products (Variable ``candlecast_products``, else ``CANDLECAST_EXTRACT_PRODUCTS``) in batches of
    ``batch_size``, in order: the hourly and weekly steps map one task over each (dynamic task mapping)."""
    from candlecast.settings import ExtractSettings
    from cycle.context import parse_products

    raw = airflow_variables().get(VAR_PRODUCTS)
    # the env var's products when no Variable names them (the settings layer checks them; no credentials read)
    chosen = ExtractSettings.from_env(dict(os.environ)).products if raw is None else parse_products(
        raw, f"Airflow Variable {VAR_PRODUCTS}")
    return [list(chosen[i:i + batch_size]) for i in range(0, len(chosen), batch_size)]


FAILED_STATES = frozenset({"failed", "upstream_failed"})
MAPPED_INSTANCE = re.compile(r"(?P<task>.+)_(?P<index>\d+)")


def failed_earlier_steps(name: str) -> tuple[str, ...]:
    """The steps before ``name`` in this task's DAG run with a failed task (the run's task states, read through
    the Task SDK), as ``cycle.run`` tells a step that runs after a failure. A Cosmos task counts for its group; a
    mapped step (one task per batch of products) counts when its task of this task's batch (the same map index)
    failed, so a batch's fallback names its own failed extract, not another batch's."""
    from airflow.sdk import get_current_context

    from cycle.steps import HOURLY_STEPS, WEEKLY_STEPS

    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    steps = HOURLY_STEPS if any(s.name == name for s in HOURLY_STEPS) else WEEKLY_STEPS
    earlier = [s.name for s in steps[:[s.name for s in steps].index(name)]]
    failed = set()
    for key, state in states.items():
        if getattr(state, "value", state) not in FAILED_STATES:
            continue
        task = key.split(".")[0]
        mapped = MAPPED_INSTANCE.fullmatch(task)
        if mapped and mapped["task"] in earlier:  # "extract_3": the extract of batch 3
            if int(mapped["index"]) == ti.map_index:
                failed.add(mapped["task"])
        else:
            failed.add(task)
    return tuple(s for s in earlier if s in failed)


# Errors a retry cannot heal (an hour the API cannot give the run: a product too far behind or never backfilled).
# Their task fails at once instead of climbing the retry ladder for minutes while ``max_active_runs=1`` holds every
# other run of the DAG back, the run that was asked for among them.
NOT_RETRIED = frozenset({"NeedsBackfill"})


def not_retried(exc: BaseException) -> bool:
    """Whether the task should fail for good on ``exc`` (raised in the task, or in its step's own process)."""
    from cycle.step_process import error_name

    return error_name(exc) in NOT_RETRIED


def run_step(name: str, data_interval_start: datetime, data_interval_end: datetime,
             conn_prefix: str | None, products: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the cycle step ``name`` over the run's data interval (for ``products``, a mapped task's batch, or else
    every product of the run); its summary becomes the task's XCom."""
    import logging

    from cycle.context import Interval, parse_products
    from cycle.step_process import error_name
    from cycle.steps import step

    chosen = step(name)
    interval = Interval.of(data_interval_start, data_interval_end)
    ctx = run_context(chosen.role, conn_prefix)
    if products:
        ctx = replace(ctx, products=parse_products(",".join(products), f"the {name} task's product batch"))
    if chosen.runs_after_failure:
        ctx = replace(ctx, failed_steps=failed_earlier_steps(name))
    try:
        summary = chosen.execute(ctx, interval)
    except Exception as exc:
        if not_retried(exc):
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{name} {interval}: {exc} [{error_name(exc)}: failed without retries, "
                                       "a retry cannot help]") from exc
        raise
    logging.getLogger(__name__).info("%s %s: %s", name, interval, chosen.describe(summary))
    return summary
