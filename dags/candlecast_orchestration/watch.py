"""One Airflow task per dbt model under Cosmos's ``ExecutionMode.WATCHER``: the task of a model and its tests.

In watcher mode each dbt group runs one ``dbt build`` of its whole selection (Cosmos's producer task,
``dbt_producer_watcher``). Cosmos would read that build's ``--log-format json`` lines as they come and push each
node's result to XCom; the model tasks here start only once the build is over, so the build runs with dbt's plain
log instead (dbt's JSON log made the accuracy build 0.4-0.6 s slower on this machine kind, and Cosmos reading it
line by line cost the task more) and reports every model's result at its end from dbt's ``run_results.json``, in
one XCom entry (``report_build``) that each model task reads once. Cosmos's own model sensor judges the model
alone (its tests would need a second task per model), so the task here judges both, as the per-model
``dbt build`` of the local mode did:

- its first try reads the build's report: it fails when the model failed (or was skipped by dbt because a model
  it reads failed) or when any of its tests failed or did not run;
- any later try (Airflow's retry after such a failure, or an operator clearing the task) builds the model and
  its tests itself (``dbt build --select <model>``), once the tasks of the models it reads have succeeded; so
  does a first try whose build did not run the model without failing (skipped, or marked success by hand).

Clearing a whole run re-runs each group's build task too, which Cosmos then skips (it never repeats a build on
a later try), so every model task of the group builds its own model, in dbt's order: slower (one dbt start-up
per model, as the local mode), the same tables.

The verdict is a pure function (``judge``), tested without Airflow; the sensor only gathers its inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cosmos.operators.watcher import DbtConsumerWatcherSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

# dbt's result statuses. A model that did its job is "success"; a test that passed is "pass", and "warn" is a
# warn-severity test that found rows (dbt carries on, as the local mode's task did).
_DONE = frozenset({"success", "pass", "warn"})
_FAILED_TASKS = frozenset({"failed", "upstream_failed"})


class ModelCheckFailed(RuntimeError):
    """A dbt model, or a test of it, did not pass in the group's build."""


def judge(model: str, model_status: str | None, tests_status: str | None, has_tests: bool,
          producer_state: str | None) -> None:
    """Raise ``ModelCheckFailed`` naming why, unless ``model`` was built and every test of it passed.

    ``tests_status`` is what the group's build reported for the model's tests together once they had all run
    (Cosmos's aggregate: "pass" or "fail"), None when it reported none; ``producer_state`` is the Airflow state of
    the task that ran that build.
    """
    if model_status is None:
        raise ModelCheckFailed(f"dbt model {model} was not built: the group's dbt build ended {producer_state} "
                               "before reaching it (see the log of its task dbt_producer_watcher)")
    if model_status == "skipped":
        raise ModelCheckFailed(f"dbt model {model} was skipped by the group's dbt build: a model it reads failed "
                               "(see the log of its task dbt_producer_watcher)")
    if model_status not in _DONE:
        raise ModelCheckFailed(f"dbt model {model} ended {model_status} in the group's dbt build "
                               "(see the log of its task dbt_producer_watcher)")
    if tests_status == "fail":
        raise ModelCheckFailed(f"dbt test(s) of model {model} failed (the log of the group's task "
                               "dbt_producer_watcher names them)")
    if tests_status == "pass" or not has_tests or producer_state == "success":
        return  # a build that succeeded ran every selected test, and none failed
    raise ModelCheckFailed(f"dbt test(s) of model {model} did not all run: the group's dbt build ended "
                           f"{producer_state} first")


# The XCom key under which a group's build reports its results: one entry, read once by each model task.
REPORT_KEY = "build_report"


def build_report(run_results: Mapping[str, Any], tests_per_model: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """What a group's build reports, from its ``run_results.json``: per model (by unique id) its dbt status, the
    verdict of its tests once all of them have a result ("pass", or "fail" when any did not pass; None before)
    and its compiled SQL (shown as the model task's rendered template)."""
    results = run_results.get("results", [])
    statuses = {r["unique_id"]: r["status"] for r in results}
    report: dict[str, Any] = {}
    for result in results:
        uid = result["unique_id"]
        if not uid.startswith("model."):
            continue
        tests = tests_per_model.get(uid) or []
        verdict = None
        if tests and all(t in statuses for t in tests):
            verdict = "pass" if all(statuses[t] in _DONE for t in tests) else "fail"
        report[uid] = {"status": result["status"], "tests": verdict,
                       "compiled_sql": (result.get("compiled_code") or "").strip() or None}
    return report


def report_build(project_dir: str, context: Context, tests_per_model: Mapping[str, Sequence[str]] | None = None,
                 **_: Any) -> None:
    """The group build's callback (Cosmos calls it in the build's project copy once dbt has exited, before it
    fails the task for a failed build): push ``build_report`` of the build to XCom, in one entry. A dbt that
    stopped before writing its results (it could not start, or was killed) reports nothing; each model task then
    says its model was not built, and its retry builds it."""
    import json
    from pathlib import Path

    path = Path(project_dir) / "target" / "run_results.json"
    try:
        run_results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("no results of the dbt build to report (%s: %s)", path, exc)
        return
    context["ti"].xcom_push(key=REPORT_KEY, value=build_report(run_results, tests_per_model or {}))


def _short(unique_id: str) -> str:
    return unique_id.rsplit(".", 1)[-1] if unique_id.startswith("model.") else unique_id.split(".")[2]


class ModelBuildSensor(DbtConsumerWatcherSensor):
    """The task of one dbt model (and its tests) in a watcher-mode group; it runs after the group's build.

    ``model_tests``: the tests the group's build runs with this model. ``upstream_model_tasks``: the tasks of
    the models of the same group it reads (in watcher mode they are not its Airflow upstream: every model task
    starts when the build is done, side by side, so that the group costs one task start after the build
    instead of one per level of the dbt graph). Both are set by ``candlecast_orchestration.dbt``.
    """

    # A rerun builds the model with its tests, as the group's build does (Cosmos's sensor would `dbt run` it).
    base_cmd: ClassVar[list[str]] = ["build"]

    def __init__(self, *, model_tests: Sequence[str] = (), upstream_model_tasks: Sequence[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_tests = tuple(model_tests)
        self.upstream_model_tasks = tuple(upstream_model_tasks)

    def poke(self, context: Context) -> bool:
        ti = context["ti"]
        name = _short(self.model_unique_id)
        if ti.try_number > 1:  # a retry, or a cleared task: this task builds the model
            return self._rebuild(context, name)
        producer_state = self._get_producer_task_status(context)
        report = (ti.xcom_pull(task_ids=self.producer_task_id, key=REPORT_KEY) or {}).get(self.model_unique_id, {})
        model_status = report.get("status")
        if model_status is None and producer_state in ("success", "skipped"):
            # the build did not run this model though it did not fail: it was skipped (a cleared group: Cosmos never
            # repeats a build) or marked done by hand; so this task builds the model
            return self._rebuild(context, name)
        if model_status is None and producer_state != "failed":
            return False  # the build is not done (this task normally starts after it)
        # raises: the task fails, and its retry rebuilds
        judge(name, model_status, report.get("tests"), bool(self.model_tests), producer_state)
        if report.get("compiled_sql"):
            self.compiled_sql = report["compiled_sql"]
            self._override_rtif(context)
        return True

    def _rebuild(self, context: Context, name: str) -> bool:
        """A retry or a cleared task: build the model again, once the models it reads are built (until then the
        task is rescheduled: ``mode="reschedule"`` frees its worker slot)."""
        from airflow.sdk.exceptions import AirflowFailException

        ti = context["ti"]
        if self.upstream_model_tasks:
            states = ti.get_task_states(dag_id=ti.dag_id, task_ids=list(self.upstream_model_tasks),
                                        run_ids=[ti.run_id]).get(ti.run_id, {})
            values = {t: getattr(s, "value", s) for t, s in states.items()}
            failed = sorted(t for t, s in values.items() if s in _FAILED_TASKS)
            if failed:
                raise AirflowFailException(f"dbt model {name} reads what {', '.join(failed)} build(s), which failed")
            if any(values.get(t) != "success" for t in self.upstream_model_tasks):
                self.log.info("dbt model %s waits for %s before building", name, sorted(values))
                return False
        return self._build(context, name)

    def _build(self, context: Context, name: str) -> bool:
        self.log.info("building dbt model %s and its tests in this task (try %s)", name, context["ti"].try_number)
        self.build_and_run_cmd(context, cmd_flags=["--select", name, "--indirect-selection", "buildable"])
        return True
