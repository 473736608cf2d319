"""Cosmos task groups: every selected dbt model (and its tests) rendered as Airflow tasks.

dbt lives in its own virtualenv (``.venv-dbt``: dbt-mysql 1.7 pins cannot coexist with Airflow 3), so
Cosmos runs it as a subprocess, both to render (``dbt ls``, when that load method is chosen) and to execute.
The default load method reads ``dbt_project/target/manifest.json`` (made by ``make dbt-parse``): about 0.1 s
per parse instead of 2-3.5 s for ``dbt ls``.

The database credentials are not in here: dbt's ``profiles.yml`` reads them with ``env_var()``. With
``CANDLECAST_AIRFLOW_CONN_PREFIX`` set (``make airflow`` sets it, and starts Airflow with no password in its
environment), they are rendered from the Airflow Connection ``{prefix}_transformer`` into dbt's environment
when the task runs, so dbt holds the transformer's password only; without it, Cosmos tasks inherit the worker's
environment (``append_env``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from candlecast.settings import SettingsError
from candlecast.settings.dags import DagSettings, connection_env_template

if TYPE_CHECKING:
    from cosmos import DbtTaskGroup

def _test_behavior(name: str) -> Any:
    from cosmos.constants import TestBehavior

    return TestBehavior(name)


def dbt_task_group(group_id: str, select: Sequence[str], settings: DagSettings, **kwargs: Any) -> DbtTaskGroup:
    """A Cosmos ``DbtTaskGroup`` of ``select`` from the project's dbt project, configured as the module says."""
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import InvocationMode, LoadMode, TestIndirectSelection

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
    )
    profile = ProfileConfig(
        profile_name="candlecast",
        target_name=settings.dbt.target,
        profiles_yml_filepath=settings.dbt.profiles_yml,
    )
    execution = ExecutionConfig(
        dbt_executable_path=str(settings.dbt.executable),
        invocation_mode=InvocationMode.SUBPROCESS,
        # A test that reads two models (relationships, spine continuity, no-lookahead) runs with the later
        # of them, once both exist: dbt's default ("eager") would run it with the first, before the second
        # is built, and fail on a fresh database. No extra task, so no extra dbt start-up (~3 s each).
        test_indirect_selection=TestIndirectSelection.BUILDABLE,
    )
    render = RenderConfig(
        load_method=LoadMode.DBT_MANIFEST if manifest_mode else LoadMode.DBT_LS,
        select=list(select),
        test_behavior=_test_behavior(settings.test_behavior),
        # Cosmos refuses a dbt that is not importable in its own interpreter unless told to shell out.
        invocation_mode=InvocationMode.SUBPROCESS,
        dbt_executable_path=str(settings.dbt.executable),
    )
    operator_args: dict[str, Any] = {"install_deps": False, "pool": settings.dbt.pool}
    if settings.conn_prefix:
        operator_args["env"] = connection_env_template(settings.conn_prefix, "transformer")
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
    return group

