"""How a DAG run goes on after a failed step and still ends failed, as the cycle command does (``cycle.run``).

A step marked ``runs_after_failure`` in the step table (``cycle/steps.py``) runs once the steps before it are
done, failed or not: Airflow's trigger rule ``all_done``. On a Python task that is its own rule; on a Cosmos
group it is the rule of the group's first tasks only (those fed by the step before), so inside the group a
failed model still stops the models built on it.

Airflow judges a run by its leaf tasks, and a failure that later steps ran past is no longer a leaf's
state; so the last task, ``all_steps_ok``, depends on every step's tasks with the default ``all_success``:
``upstream_failed`` (a failed state of the run) when any of them failed, success when all did.

Such a step, after a dbt group in watcher mode, needs the group's work done, not its verdicts: it waits for the
group's build only (``waits_for``), and the group's model tasks judge the build beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import TaskGroup, TriggerRule

    from cycle.steps import Step

ALL_STEPS_OK = "all_steps_ok"


def trigger_rule(steps: Sequence[Step], name: str) -> TriggerRule:
    """The trigger rule of the tasks that start step ``name`` of ``steps``: ``all_done`` when it runs after a
    failure (the step names of the two cycles overlap: ``features``, so the table is given)."""
    from airflow.sdk import TriggerRule

    chosen = next(s for s in steps if s.name == name)
    return TriggerRule.ALL_DONE if chosen.runs_after_failure else TriggerRule.ALL_SUCCESS


def wire_after_failure(steps: Sequence[Step], *groups: TaskGroup) -> None:
    """Give the first tasks of each Cosmos group (already wired to the step before) its step's rule."""
    for group in groups:
        ids = {task.task_id for task in group}
        for task in group.get_roots():
            if task.upstream_task_ids - ids:
                task.trigger_rule = trigger_rule(steps, str(group.group_id))


def waits_for(steps: Sequence[Step], group: TaskGroup, name: str) -> Any:
    """What step ``name`` of ``steps`` waits for after the dbt step of ``group``: its build task when the group
    has one (watcher mode) and the step runs after a failure anyway, so the group's model tasks (their verdicts,
    which ``all_steps_ok`` waits for) run beside it instead of before it; else the whole group."""
    from cosmos.constants import PRODUCER_WATCHER_TASK_ID

    chosen = next(s for s in steps if s.name == name)
    build = group.children.get(f"{group.group_id}.{PRODUCER_WATCHER_TASK_ID}")
    return build if build is not None and chosen.runs_after_failure else group


def all_steps_ok() -> Any:
    """The run's last task: no work, and ``upstream_failed`` (so the run fails) when any step task failed."""
    from airflow.providers.standard.operators.empty import EmptyOperator

    return EmptyOperator(task_id=ALL_STEPS_OK, doc_md=all_steps_ok.__doc__)
