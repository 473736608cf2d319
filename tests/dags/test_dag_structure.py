"""The DAG files parse cleanly, fast and without I/O, and render the graph the design says."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from candlecast.dag_parse import DAG_FILES, ParseReport, parse_dags
from tests.dags.conftest import DAGS_DIR, REPO_ROOT

pytestmark = pytest.mark.integration

HOURLY, WEEKLY = "candlecast_hourly", "candlecast_weekly_retrain"


def manifest_models(manifest: Path, select: list[str]) -> dict[str, list[str]]:
    """Models a plain selection (``name`` or ``+name``) picks, each with the tests attached to it."""
    data = json.loads(manifest.read_text())
    nodes = data["nodes"]
    by_name = {n["name"]: uid for uid, n in nodes.items() if n["resource_type"] == "model"}
    picked: set[str] = set()

    def ancestors(uid: str) -> None:
        if uid in picked:
            return
        picked.add(uid)
        for parent in data["parent_map"].get(uid, []):
            if parent.startswith("model."):
                ancestors(parent)

    for sel in select:
        uid = by_name[sel.lstrip("+")]
        if sel.startswith("+"):
            ancestors(uid)
        else:
            picked.add(uid)
    tests: dict[str, list[str]] = {uid: [] for uid in picked}
    for node in nodes.values():
        if node["resource_type"] == "test":
            for parent in node["depends_on"]["nodes"]:
                if parent in tests:
                    tests[parent].append(node["name"])
    return {nodes[uid]["name"]: sorted(t) for uid, t in tests.items()}


BATCHES = "product_batches"  # the task that splits the run's products into the batches steps are mapped over


def mapped_over_batches(task: Any) -> bool:
    """A task mapped (dynamic task mapping) over the product batches, alone or in a mapped task group."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    group = task.task_group
    return isinstance(task, MappedOperator) or type(group).__name__ == "MappedTaskGroup"


def step_task(dag: Any, name: str) -> Any:
    """The task of a Python step: by its name, or inside the weekly DAG's mapped ``retrain`` group."""
    return dag.get_task(name) if name in dag.task_dict else dag.get_task(f"retrain.{name}")


def dbt_tasks(dag, group: str) -> dict[str, Any]:  # Airflow operators; Cosmos's carry select, pool, ...
    return {t.task_id: t for t in dag.tasks if t.task_id.startswith(f"{group}.")}


def test_both_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {HOURLY, WEEKLY}


def test_schedules_run_one_interval_at_a_time_in_utc_with_backoff(dagbag) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    expected = {HOURLY: "0 * * * *", WEEKLY: "30 23 * * 0"}
    for dag_id, cron in expected.items():
        dag = dagbag.dags[dag_id]
        # A data-interval timetable: each run covers [previous tick, this tick), which the tasks read.
        assert isinstance(dag.timetable, CronDataIntervalTimetable)
        assert dag.timetable.expression == cron
        assert str(dag.timetable.timezone) == "UTC"
        assert dag.max_active_runs == 1
        for task in dag.tasks:
            assert task.retry_exponential_backoff == 2.0
            assert task.max_retry_delay == timedelta(minutes=30)


def test_hourly_runs_extract_then_features_then_predict_then_accuracy_then_health(dagbag, dbt_manifest: Path) -> None:
    dag = dagbag.dags[HOURLY]
    features, accuracy = dbt_tasks(dag, "features"), dbt_tasks(dag, "accuracy")
    python_tasks = {t.task_id for t in dag.tasks} - set(features) - set(accuracy)
    assert python_tasks == {BATCHES, "extract", "predict", "health", "all_steps_ok"}

    extract, predict = dag.get_task("extract"), dag.get_task("predict")
    # one extract and one predict task per batch of products (dynamic task mapping), extract batches one at a time
    assert mapped_over_batches(extract) and mapped_over_batches(predict)
    assert extract.max_active_tis_per_dagrun == 1
    assert extract.upstream_task_ids == {BATCHES}
    # extract feeds the roots of the feature group (its one dbt build); predict waits for that build (and its
    # batch), and the group's model tasks judge it beside predict.
    roots = {tid for tid, t in features.items() if not (t.upstream_task_ids & set(features))}
    leaves = {tid for tid, t in features.items() if not (t.downstream_task_ids & set(features))}
    assert extract.downstream_task_ids == roots | {"all_steps_ok"}
    assert predict.upstream_task_ids == {"features.dbt_producer_watcher", BATCHES}
    acc_roots = {tid for tid, t in accuracy.items() if not (t.upstream_task_ids & set(accuracy))}
    acc_leaves = {tid for tid, t in accuracy.items() if not (t.downstream_task_ids & set(accuracy))}
    assert predict.downstream_task_ids == acc_roots | {"all_steps_ok"}
    assert all(t.downstream_task_ids <= set(accuracy) | {"health", "all_steps_ok"} for t in accuracy.values())
    # health judges the hour once the accuracy marts are built, after a failure too (stale data is when it
    # matters), in the dbt pool since it builds a dbt table.
    health = dag.get_task("health")
    assert health.upstream_task_ids == {"accuracy.dbt_producer_watcher"} and health.trigger_rule == "all_done"
    assert health.pool == "candlecast_dbt"
    # A failed extract (an API outage) must not silence the hour: the steps after it run once it is done,
    # failed or not. Each dbt group starts with its one `dbt build`, and its model tasks judge what it did once it
    # is done, failed or not (a failed model stops what is built on it inside dbt itself).
    assert roots == {"features.dbt_producer_watcher"} and acc_roots == {"accuracy.dbt_producer_watcher"}
    assert {features[t].trigger_rule for t in roots} == {"all_done"}
    assert {features[t].trigger_rule for t in set(features) - roots} == {"all_done"}
    assert predict.trigger_rule == "all_done"
    assert {accuracy[t].trigger_rule for t in acc_roots} == {"all_done"}
    # ... and the run still fails: its only leaf waits on every step's tasks, all succeeded.
    check = dag.get_task("all_steps_ok")
    assert check.trigger_rule == "all_success" and check.downstream_task_ids == set()
    assert check.upstream_task_ids == {"extract", "predict", "health"} | leaves | acc_leaves


def test_every_task_of_both_dags_alerts_when_it_fails(dagbag) -> None:
    """Through Airflow's notifier mechanism: the log line always (mail only when CANDLECAST_ALERT_EMAIL is set)."""
    from airflow.sdk.bases.notifier import BaseNotifier
    from candlecast_orchestration.alerts import LogAlertNotifier

    for dag_id in (HOURLY, WEEKLY):
        for task in dagbag.dags[dag_id].tasks:
            callbacks = task.on_failure_callback
            assert all(isinstance(c, BaseNotifier) for c in callbacks), (dag_id, task.task_id)
            assert any(isinstance(c, LogAlertNotifier) for c in callbacks), (dag_id, task.task_id)
            # mail is configured in these tests: the alert mail on failure, "resolved" on the next success
            assert [type(c).__name__ for c in callbacks[1:]] == ["MailAlertNotifier"], (dag_id, task.task_id)
            assert [type(c).__name__ for c in task.on_success_callback] == ["MailResolvedNotifier"]


def test_the_same_failure_is_mailed_once_a_day_while_a_new_one_is_mailed_at_once(dagbag) -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from candlecast_orchestration.alerts import Mailed, is_new, signature

    def failure(hour: int, message: str) -> Mailed:
        context = {"ti": SimpleNamespace(dag_id=HOURLY, task_id="health"), "exception": RuntimeError(message)}
        return Mailed(signature(context), datetime(2024, 1, 8, tzinfo=UTC) + timedelta(hours=hour))

    day = timedelta(hours=24)
    losing = "health check failed at 2024-01-08 {h}:00 UTC: BTC-USD: skill_168h = -0.{n} below the minimum -0.02"
    first = failure(0, losing.format(h="00", n="3006"))
    assert is_new(None, first, day)
    # the next hours: another hour, another skill, the same failure
    assert not is_new(first, failure(1, losing.format(h="01", n="2911")), day)
    assert not is_new(first, failure(23, losing.format(h="23", n="1")), day)
    assert is_new(first, failure(24, losing.format(h="00", n="3")), day)  # the daily reminder
    assert is_new(first, failure(-30, losing.format(h="18", n="3")), day)  # a backfill of older hours
    assert is_new(first, failure(2, "health check failed at 2024-01-08 02:00 UTC: BTC-USD: raw_lag_hours = 3 above "
                                    "the maximum 2 (health_raw_data_is_fresh, error)"), day)
    assert Mailed.from_json(first.to_json()) == first


def test_a_failure_only_a_backfill_heals_fails_its_task_at_once_and_others_get_the_retries(dagbag) -> None:
    """The task raises AirflowFailException for these (no retry), so a run for an hour the API cannot give it
    does not hold the DAG's queue (max_active_runs=1) for the whole retry ladder."""
    from candlecast_orchestration.tasks import not_retried

    from cycle.step_process import StepProcessError
    from extract.errors import FetchError, NeedsBackfill

    # as the extract step's own process reports it (its type's name), and as raised in-process
    assert not_retried(StepProcessError(NeedsBackfill.__name__, "BTC-USD: ... Run a backfill: ..."))
    assert not_retried(NeedsBackfill("BTC-USD: ... Run a backfill: ..."))
    assert not not_retried(StepProcessError(FetchError.__name__, "BTC-USD: gave up after 3 attempts: HTTP 503"))
    assert not not_retried(StepProcessError("StepProcessDied", "killed by signal 9"))


def test_the_default_alert_is_one_log_line_naming_dag_task_run_hour_and_error(dagbag, caplog) -> None:
    import logging
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from candlecast_orchestration.alerts import LogAlertNotifier

    # what a task's failure callback is handed (the Task SDK's context: its task instance, interval, error)
    context = {
        "ti": SimpleNamespace(dag_id=HOURLY, task_id="health", run_id="scheduled__2024-01-08T16:00:00+00:00",
                              try_number=4),
        "data_interval_start": datetime(2024, 1, 8, 16, tzinfo=UTC),
        "data_interval_end": datetime(2024, 1, 8, 17, tzinfo=UTC),
        "exception": RuntimeError("health check failed at 2024-01-08 17:00 UTC: BTC-USD: raw_lag_hours = 3 above "
                                  "the maximum 2 (health_raw_data_is_fresh, error)\nwarning: ..."),
    }
    with caplog.at_level(logging.ERROR, logger="candlecast.alerts"):
        LogAlertNotifier()(context)
    assert [r.getMessage() for r in caplog.records if r.name == "candlecast.alerts"] == [
        "candlecast alert: DAG candlecast_hourly task health failed; run scheduled__2024-01-08T16:00:00+00:00; "
        "hour 2024-01-08 16:00..2024-01-08 17:00 UTC, try 4: RuntimeError: health check failed at 2024-01-08 17:00 "
        "UTC: BTC-USD: raw_lag_hours = 3 above the maximum 2 (health_raw_data_is_fresh, error)"]


def test_a_mapped_tasks_alert_names_its_batch_as_the_ui_does(dagbag) -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from candlecast_orchestration.alerts import alert_subject, alert_text

    context = {
        "ti": SimpleNamespace(dag_id=HOURLY, task_id="extract", map_index=1,
                              run_id="scheduled__2024-01-08T16:00:00+00:00", try_number=4),
        "data_interval_start": datetime(2024, 1, 8, 16, tzinfo=UTC),
        "data_interval_end": datetime(2024, 1, 8, 17, tzinfo=UTC),
        "exception": RuntimeError("ETH-USD window ...: HTTP 404"),
    }
    assert alert_subject(context) == "candlecast alert: candlecast_hourly.extract[1] failed for 2024-01-08 16:00 UTC"
    assert alert_text(context).startswith("candlecast alert: DAG candlecast_hourly task extract[1] failed; ")
    # an unmapped task's map index is -1: its id alone
    context["ti"] = SimpleNamespace(dag_id=HOURLY, task_id="health", map_index=-1, run_id="r", try_number=1)
    assert alert_subject(context) == "candlecast alert: candlecast_hourly.health failed for 2024-01-08 16:00 UTC"


def test_weekly_runs_features_then_train_evaluate_promote_per_batch_of_products(dagbag) -> None:
    dag = dagbag.dags[WEEKLY]
    features = dbt_tasks(dag, "features")
    assert {t.task_id for t in dag.tasks} - set(features) == {BATCHES, "retrain.train", "retrain.evaluate",
                                                              "retrain.promote"}
    leaves = {tid for tid, t in features.items() if not (t.downstream_task_ids & set(features))}
    # a task group mapped over the batches: each batch trains, evaluates and promotes on its own
    assert all(mapped_over_batches(dag.get_task(f"retrain.{name}")) for name in ("train", "evaluate", "promote"))
    assert dag.get_task("retrain.train").upstream_task_ids == leaves | {BATCHES}
    # (each task of the group reads its batch from product_batches too)
    assert dag.get_task("retrain.evaluate").upstream_task_ids == {"retrain.train", BATCHES}
    assert dag.get_task("retrain.promote").upstream_task_ids == {"retrain.evaluate", BATCHES}
    assert dag.get_task("retrain.promote").downstream_task_ids == set()


@pytest.mark.parametrize("dag_id,steps", [(HOURLY, "HOURLY_STEPS"), (WEEKLY, "WEEKLY_STEPS")])
def test_each_dag_runs_the_steps_of_the_cycle_command_in_its_order(dagbag, dag_id: str, steps: str) -> None:
    """``python -m cycle`` runs the same steps in the same order: a Python task per step, a Cosmos group per dbt
    step rendering the same selection."""
    import cycle.steps

    dag = dagbag.dags[dag_id]
    expected = getattr(cycle.steps, steps)
    previous: set[str] = set()
    build: set[str] = set()  # after a dbt step: its build task
    for step in expected:
        # a step that runs after a failure anyway waits for a dbt step's build only, not for its model tasks
        before = build if build and step.runs_after_failure else previous
        if step.is_dbt:
            group = dbt_tasks(dag, step.name)
            assert group, f"{dag_id} has no task group {step.name}"
            ids = set(group)
            roots = {tid for tid, t in group.items() if not (t.upstream_task_ids & ids)}
            assert all(dag.get_task(tid).upstream_task_ids - ids == before for tid in roots)
            if previous:  # the cycle command runs the step after an earlier failure exactly when Airflow does
                assert {dag.get_task(tid).trigger_rule for tid in roots} == {
                    "all_done" if step.runs_after_failure else "all_success"}
            previous = {tid for tid, t in group.items() if not (t.downstream_task_ids & ids)}
            build = {f"{step.name}.dbt_producer_watcher"}
            # every dbt command of the group (its build, a model task's rebuild) gets the step's --vars (the hourly
            # features: tests on the recent hours)
            runs_dbt = {tid: t for tid, t in group.items() if hasattr(t, "vars")}
            assert f"{step.name}.dbt_producer_watcher" in runs_dbt
            assert {tid: t.vars or {} for tid, t in runs_dbt.items()} == {tid: dict(step.dbt_vars) for tid in runs_dbt}
        else:
            task = step_task(dag, step.name)
            # a step mapped over the product batches also waits for them
            assert task.upstream_task_ids - {BATCHES} == before
            assert task.trigger_rule == ("all_done" if step.runs_after_failure else "all_success")
            previous, build = {task.task_id}, set()
    assert all(dag.get_task(tid).downstream_task_ids <= {"all_steps_ok"} for tid in previous)
    named = {t.task_id.removeprefix("retrain.").split(".")[0] for t in dag.tasks} - {"all_steps_ok", BATCHES}
    assert named == {step.name for step in expected}


@pytest.mark.parametrize("dag_id,group", [(HOURLY, "features"), (HOURLY, "accuracy"), (WEEKLY, "features")])
def test_cosmos_renders_one_dbt_build_per_group_and_one_task_per_model_judging_its_tests(
        dagbag, dbt_manifest: Path, dag_id: str, group: str) -> None:
    from candlecast_orchestration.watch import ModelBuildSensor, report_build

    from cycle.steps import ACCURACY_SELECT, FEATURE_SELECT

    select = list(FEATURE_SELECT if group == "features" else ACCURACY_SELECT)
    expected = manifest_models(dbt_manifest, select)
    assert any(expected.values()), "the selected models carry dbt tests"
    tasks = dbt_tasks(dagbag.dags[dag_id], group)
    parents = json.loads(dbt_manifest.read_text())["parent_map"]
    # ExecutionMode.WATCHER: one `dbt build` of the step's selection (models and tests, as the cycle command's
    # build), in the one-slot dbt pool, never retried as a whole ...
    build = tasks.pop(f"{group}.dbt_producer_watcher")
    assert type(build).__name__ == "DbtProducerWatcherOperator"
    assert build.base_cmd == ["build"] and build.select == " ".join(select)
    assert build.indirect_selection == "buildable"
    assert build.pool == "candlecast_dbt" and build.retries == 0
    assert str(build.dbt_executable_path) == str(REPO_ROOT / ".venv-dbt" / "bin" / "dbt")
    # plain logs; the results are reported from dbt's run_results.json once the build is over
    assert build.callback is report_build and "--log-format" not in build.dbt_cmd_global_flags
    assert build.callback_args["tests_per_model"] == build.tests_per_model
    assert build.profile_config.profiles_yml_filepath == REPO_ROOT / "profiles.yml"
    assert type(tasks.pop(f"{group}.dbt_producer_watcher_done")).__name__ == "EmptyOperator"
    # ... and one task per model, all started when the build is done, each failing when its model or one of that
    # model's tests failed (a rerun builds the model and its tests itself, after the models it reads)
    assert sorted(tasks) == sorted(f"{group}.{model}_model_build" for model in expected)
    for task_id, task in tasks.items():
        model = task_id.removeprefix(f"{group}.").removesuffix("_model_build")
        assert isinstance(task, ModelBuildSensor)
        assert task.model_unique_id == f"model.candlecast.{model}"
        assert task.upstream_task_ids == {build.task_id}
        assert sorted(t.split(".")[2] for t in task.model_tests) == expected[model]
        assert task.base_cmd == ["build"] and task.pool == "candlecast_dbt_verdicts"  # one model task at a time
        # the model's dbt owner (meta.owner, by its group) owns its task
        assert task.owner == ("candlecast data" if group == "features" else "candlecast ML")
        reads = {p.split(".")[2] for p in parents[f"model.candlecast.{model}"]} & set(expected)
        assert set(task.upstream_model_tasks) == {f"{group}.{m}_model_build" for m in reads}


@pytest.mark.parametrize("model_status,tests,has_tests,build,fails_with", [
    ("success", "pass", True, "success", None),
    ("success", None, False, "failed", None),  # no test of its own: another model's failure is not its
    # a failing test fails its model's task, whether the build went on or not
    ("success", "fail", True, "failed", "dbt test(s) of model m failed"),
    ("success", "fail", True, "success", "dbt test(s) of model m failed"),
    # dbt skips what reads a failed model, and its task fails
    ("skipped", None, True, "failed", "dbt model m was skipped by the group's dbt build"),
    ("failed", None, True, "failed", "dbt model m ended failed"),
    ("error", None, True, "failed", "dbt model m ended error"),
    # a build that died before the model, or before its tests, leaves the task to fail (and its retry to build)
    (None, None, True, "failed", "dbt model m was not built"),
    ("success", None, True, "failed", "dbt test(s) of model m did not all run"),
])
def test_a_model_task_fails_when_its_model_or_any_of_its_tests_did(dagbag, model_status, tests, has_tests, build,
                                                                   fails_with) -> None:
    from candlecast_orchestration.watch import ModelCheckFailed, judge

    if fails_with is None:
        judge("m", model_status, tests, has_tests, build)
    else:
        with pytest.raises(ModelCheckFailed, match=re.escape(fails_with)):
            judge("m", model_status, tests, has_tests, build)


def test_the_build_reports_each_models_status_its_tests_verdict_and_its_sql_from_dbts_run_results(dagbag) -> None:
    """What a group's build reports to its model tasks, from a ``run_results.json`` as dbt 1.7 writes it
    (a model whose test failed, one skipped behind a failed model, a test that did not run), and the verdicts."""
    from candlecast_orchestration.watch import ModelCheckFailed, build_report, judge

    def result(uid: str, status: str, sql: str | None = None) -> dict[str, Any]:
        return {"unique_id": uid, "status": status, "compiled_code": sql, "message": None, "failures": None}

    a, b, c, d = (f"model.candlecast.{m}" for m in "abcd")
    run_results = {"results": [
        result(a, "success", "select 1\n"), result("test.candlecast.a_ok.1", "pass"),
        result("test.candlecast.a_warns.2", "warn"),
        result(b, "success", "select 2"), result("test.candlecast.b_unique.3", "fail"),
        result("test.candlecast.b_ok.4", "pass"),
        result(c, "error", "select x"), result(d, "skipped"),
        result("test.candlecast.d_ok.5", "skipped"),
    ]}
    tests = {a: ["test.candlecast.a_ok.1", "test.candlecast.a_warns.2"],
             b: ["test.candlecast.b_unique.3", "test.candlecast.b_ok.4"],
             c: ["test.candlecast.c_never_ran.6"], d: ["test.candlecast.d_ok.5"]}
    report = build_report(run_results, tests)
    assert report == {
        a: {"status": "success", "tests": "pass", "compiled_sql": "select 1"},
        b: {"status": "success", "tests": "fail", "compiled_sql": "select 2"},
        c: {"status": "error", "tests": None, "compiled_sql": "select x"},
        d: {"status": "skipped", "tests": "fail", "compiled_sql": None},
    }

    def verdict(model: str) -> str:
        try:
            judge(model, report[f"model.candlecast.{model}"]["status"], report[f"model.candlecast.{model}"]["tests"],
                  True, "failed")
        except ModelCheckFailed as exc:
            return str(exc).split(" (")[0]
        return "ok"

    assert [verdict(m) for m in "abcd"] == [
        "ok", "dbt test(s) of model b failed", "dbt model c ended error in the group's dbt build",
        "dbt model d was skipped by the group's dbt build: a model it reads failed"]


def _parse_in_subprocess(extra_env: dict[str, str], files: tuple[str, ...] = DAG_FILES) -> ParseReport:
    """Parse dags/ in a fresh interpreter, as the DAG processor does."""
    report = parse_dags(DAGS_DIR, files, env={**os.environ, **extra_env})
    assert report.import_errors == {}
    return report


def test_parsing_touches_no_database_and_imports_no_data_library(dbt_manifest: Path) -> None:
    # A database that cannot answer and no credentials at all: parsing must not care.
    env = {"CANDLECAST_DB_HOST": "192.0.2.1", "CANDLECAST_DB_PORT": "1",
           "CANDLECAST_CREDENTIALS_FILE": "/nonexistent/credentials.env"}
    env.update({k: "" for k in os.environ if k.startswith("CANDLECAST_") and k.endswith("_PASSWORD")})
    report = _parse_in_subprocess(env)
    assert sorted(report.modules & {"pandas", "lightgbm", "pymysql", "extract", "ml", "requests"}) == []


def test_dbt_ls_load_method_renders_the_same_tasks(dagbag, airflow_db, dag_env, dbt_manifest: Path) -> None:
    """LoadMode.DBT_LS (dbt ls through .venv-dbt's dbt as a subprocess) gives the graph the manifest gives."""
    # One file is enough (each task group runs its own `dbt ls`, about 3 s cold).
    report = _parse_in_subprocess({"CANDLECAST_COSMOS_LOAD_METHOD": "dbt_ls"}, ("candlecast_weekly_retrain.py",))
    assert sorted(report.dags[WEEKLY].task_ids) == sorted(t.task_id for t in dagbag.dags[WEEKLY].tasks)
