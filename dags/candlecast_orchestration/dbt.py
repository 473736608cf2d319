"""Cosmos task groups: every selected dbt model (and its tests) rendered as an Airflow task.

Two ways to run them (``CANDLECAST_COSMOS_EXECUTION_MODE``):

- ``watcher`` (the default): Cosmos's ``ExecutionMode.WATCHER``. The group's first task
  (``dbt_producer_watcher``) runs one ``dbt build`` of the whole selection, models and tests, at dbt's own
  speed; then one task per model (``candlecast_orchestration.watch.ModelBuildSensor``) reads that model's
  result and its tests' from the build's report, side by side: a failing test fails its model's task, naming
  the test, and the task's retry (or clearing it) builds that model and its tests again on its own, once the
  models it reads are built. The build holds the dbt pool (one dbt at a time across both DAGs) and is never
  retried as a whole (its models are, each by its task); a model task that rebuilds does so outside the pool.
- ``local``: one ``dbt build --select <model>`` per model task (Cosmos's ``ExecutionMode.LOCAL``), each
  paying dbt's start-up (~3 s here), one at a time in the dbt pool.

dbt lives in its own virtualenv (``.venv-dbt``: dbt-mysql 1.7 pins cannot coexist with Airflow 3), so Cosmos
runs it as a subprocess, both to render (``dbt ls``, when that load method is chosen) and to execute (in watcher
mode the build's ``run_results.json`` is how the model tasks learn each node's result: ``watch.report_build``).
The default load method reads ``dbt_project/target/manifest.json`` (made by ``make dbt-parse``): about 0.1 s
per parse instead of 2-3.5 s for ``dbt ls``.

The database credentials are not in here: dbt's ``profiles.yml`` reads them with ``env_var()``. With
``CANDLECAST_AIRFLOW_CONN_PREFIX`` set (``make airflow`` sets it, and starts Airflow with no password in its
environment), they are rendered from the Airflow Connection ``{prefix}_transformer`` into dbt's environment
when the task runs, so dbt holds the transformer's password only; without it, Cosmos tasks inherit the worker's
environment (``append_env``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from candlecast.settings import SettingsError
from candlecast.settings.dags import DagSettings, connection_env_template

if TYPE_CHECKING:
    from cosmos import DbtTaskGroup
    from cosmos.dbt.graph import DbtNode

# How often a model task looks again while it waits (it normally starts after the build and never waits).
POKE_SECONDS = 5
MAX_POKE_SECONDS = 60  # the wait doubles up to this (a model it reads may be waiting for its own retry)
# A model task that waits longer than this for its build, or for the models it reads to be rebuilt, fails.
WAIT_SECONDS = 3600


def _test_behavior(name: str) -> Any:
    from cosmos.constants import TestBehavior

    return TestBehavior(name)


def dbt_task_group(group_id: str, select: Sequence[str], settings: DagSettings, queue: str | None = None,
                   dbt_vars: Mapping[str, str] | None = None, **kwargs: Any) -> DbtTaskGroup:
    """A Cosmos ``DbtTaskGroup`` of ``select`` from the project's dbt project, configured as the module says; its
    tasks go to the Celery ``queue`` when one is given (Cosmos sets its watcher build's queue itself: a DAG's
    ``default_args`` do not reach it), and every dbt command it runs gets ``dbt_vars`` as its ``--vars``."""
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import DbtResourceType, ExecutionMode, InvocationMode, LoadMode, TestIndirectSelection

    manifest_mode = settings.load_method == "dbt_manifest"
    if manifest_mode and not settings.dbt.manifest_path.exists():
        # Cosmos would say "Could not find manifest"; say how to make it.
        raise SettingsError(
            f"dbt manifest not found at {settings.dbt.manifest_path}: run `make dbt-parse` "
            "(or set CANDLECAST_COSMOS_LOAD_METHOD=dbt_ls)"
        )
    project = ProjectConfig(
        dbt_project_path=settings.dbt.project_dir,
        manifest_path=settings.dbt.manifest_path if manifest_mode else None,
        # No packages.yml, and workers must not reach for the network at run time.
        install_dbt_deps=False,
        dbt_vars=dict(dbt_vars) if dbt_vars else None,
    )
    profile = ProfileConfig(
        profile_name="candlecast",
        target_name=settings.dbt.target,
        profiles_yml_filepath=settings.dbt.profiles_yml,
    )
    watcher = settings.execution_mode == "watcher"
    if watcher and settings.test_behavior != "build":
        raise SettingsError("CANDLECAST_COSMOS_EXECUTION_MODE=watcher runs each group's tests in its one dbt build "
                            "(CANDLECAST_COSMOS_TEST_BEHAVIOR=build); set CANDLECAST_COSMOS_EXECUTION_MODE=local "
                            f"for test behaviour {settings.test_behavior!r}")
    # A test that reads two models (relationships, spine continuity, no-lookahead) runs with the later of them,
    # once both exist: dbt's default ("eager") would run it with the first, before the second is built, and fail
    # on a fresh database.
    indirect = TestIndirectSelection.BUILDABLE
    execution = ExecutionConfig(
        execution_mode=ExecutionMode.WATCHER if watcher else ExecutionMode.LOCAL,
        dbt_executable_path=str(settings.dbt.executable),
        invocation_mode=InvocationMode.SUBPROCESS,
        test_indirect_selection=indirect,
        # The group's one build: in the dbt pool, with the same test selection as the cycle command's build (Cosmos
        # gives it to per-model tasks only), and not retried as a whole (each model task retries its model).
        **({"setup_operator_args": {"pool": settings.dbt.pool, "retries": 0, "indirect_selection": indirect.value,
                                    # plain text in the task log (its results are read from run_results.json)
                                    "dbt_cmd_global_flags": ["--no-use-colors"],
                                    **({"queue": queue} if queue else {})}}
           if watcher else {}),
    )
    render = RenderConfig(
        load_method=LoadMode.DBT_MANIFEST if manifest_mode else LoadMode.DBT_LS,
        select=list(select),
        test_behavior=_test_behavior(settings.test_behavior),
        # Cosmos refuses a dbt that is not importable in its own interpreter unless told to shell out.
        invocation_mode=InvocationMode.SUBPROCESS,
        dbt_executable_path=str(settings.dbt.executable),
        node_converters={DbtResourceType.MODEL: _model_task} if watcher else None,
    )
    operator_args: dict[str, Any] = {"install_deps": False}
    if watcher:
        # Not deferred (a trigger and a second task start per model); "reschedule": a model task that has to wait
        # (its build is not done, or it rebuilds after models it reads) frees its worker slot meanwhile.
        operator_args.update({"deferrable": False, "mode": "reschedule", "poke_interval": POKE_SECONDS,
                              "exponential_backoff": True, "max_wait": MAX_POKE_SECONDS, "timeout": WAIT_SECONDS,
                              # one model task at a time (the build takes the dbt pool: setup_operator_args)
                              "pool": settings.dbt.verdict_pool})
    else:
        operator_args["pool"] = settings.dbt.pool
    if settings.conn_prefix:
        operator_args["env"] = connection_env_template(settings.conn_prefix, "transformer")
    if queue:
        operator_args["queue"] = queue
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=project,
        profile_config=profile,
        execution_config=execution,
        render_config=render,
        operator_args=operator_args,
        **kwargs,
    )
    if not group.children:
        # An empty group would silently wire its neighbours to each other (Airflow then reports a cycle).
        raise SettingsError(
            f"dbt selection {select} matched no model in {settings.dbt.project_dir} "
            f"({settings.load_method}); re-run `make dbt-parse` after changing the dbt project"
        )
    if watcher:
        _models_after_the_build(group)
    return group


def _model_task(*, dag: Any, task_group: Any, task_args: dict[str, Any], node: DbtNode, task_id: str,
                **_: Any) -> Any:
    """Cosmos's node converter for a model in watcher mode: the model's task (``watch.ModelBuildSensor``)."""
    from candlecast_orchestration.watch import ModelBuildSensor

    identifier = "__".join(part for part in (dag.dag_id, task_group.group_id if task_group else None) if part)
    return ModelBuildSensor(
        task_id=task_id, dag=dag, task_group=task_group,
        # what Cosmos gives its own model sensors: the node (its unique id is what the build reports under)
        extra_context={"dbt_node_config": node.context_dict, "dbt_dag_task_group_identifier": identifier,
                       "package_name": node.package_name},
        **({"owner": node.owner} if node.owner else {}),
        **task_args,
    )


def _models_after_the_build(group: DbtTaskGroup) -> None:
    """Start every model task when the group's build is done, side by side, each told its tests and the tasks
    of the models it reads; the group's verdict is its model tasks' (the build's own failure is theirs).

    Cosmos wires a watcher group's model tasks along the dbt graph and starts the first ones with the build:
    a model task then starts only once the one before it has succeeded, one task start (1-2 s here) per level
    of the graph, mostly after the build is over. Reading results needs no order: dbt itself skips what reads
    a failed model, and that model's task then fails too. Only a rebuild (a retry) waits for the models it
    reads (``ModelBuildSensor.upstream_model_tasks``).
    """
    from airflow.sdk import TriggerRule
    from cosmos.constants import PRODUCER_WATCHER_DONE_TASK_ID, PRODUCER_WATCHER_TASK_ID
    from cosmos.operators._watcher.xcom import _backup_xcom_to_variable

    from candlecast_orchestration.watch import ModelBuildSensor, report_build

    prefix = f"{group.group_id}."
    tasks = {t.task_id: t for t in group}
    producer = tasks[prefix + PRODUCER_WATCHER_TASK_ID]
    done = tasks[prefix + PRODUCER_WATCHER_DONE_TASK_ID]
    models = {t.model_unique_id: t for t in tasks.values() if isinstance(t, ModelBuildSensor)}
    graph = group.dbt_graph
    ids = {t.task_id for t in models.values()}
    for uid, task in models.items():
        node = graph.filtered_nodes[uid]
        for other in (task.upstream_task_ids & ids):
            task.upstream_task_ids.discard(other)
            tasks[other].downstream_task_ids.discard(task.task_id)
        task.upstream_model_tasks = tuple(sorted(models[p].task_id for p in node.depends_on if p in models))
        task.model_tests = _tests_run_with(uid, graph)
        producer >> task
        # after the build whatever its end: a failed build's models are judged (and rebuilt) one by one
        task.trigger_rule = TriggerRule.ALL_DONE
    done.trigger_rule = TriggerRule.ALL_DONE
    # The build logs plain text (Cosmos would add `--log-format json`) and reports its results when it is over.
    producer.log_format = None
    producer.callback = report_build
    producer.callback_args = {"tests_per_model": producer.tests_per_model}
    # Cosmos adds to the build's failure (and retry) callbacks a copy of its results into an Airflow Variable, for
    # a retry of the build to restore; the build is never retried here, so the Variable would only pile up.
    for name in ("on_failure_callback", "on_retry_callback"):
        callbacks = getattr(producer, name)
        if isinstance(callbacks, list):
            setattr(producer, name, [c for c in callbacks if c is not _backup_xcom_to_variable])
        elif callbacks is _backup_xcom_to_variable:
            setattr(producer, name, None)


def _tests_run_with(model: str, graph: Any) -> tuple[str, ...]:
    """The tests of ``model`` that the group's ``dbt build --indirect-selection buildable`` runs: those whose
    every parent is selected, upstream of the selection, or a source (dbt's rule, ``dbt.graph.selector``)."""
    from cosmos.constants import DbtResourceType

    selected = {uid for uid, n in graph.filtered_nodes.items() if n.resource_type != DbtResourceType.TEST}
    buildable = set(selected)
    stack = list(selected)
    while stack:
        for parent in graph.nodes[stack.pop()].depends_on:
            if parent not in buildable and parent in graph.nodes:
                buildable.add(parent)
                stack.append(parent)
    return tuple(sorted(t for t in graph.tests_per_model.get(model, [])
                        if all(p in buildable or p.startswith("source.") for p in graph.nodes[t].depends_on)))
