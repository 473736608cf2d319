"""The local Airflow's executor preloads the DAGs' libraries and nothing of the project (candlecast.airflow_executor).

Each check runs in a fresh interpreter, as the scheduler does: the test process has imported the project already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from candlecast import airflow_executor, airflow_local

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from pathlib import Path
from candlecast.airflow_executor import preload
dropped = preload(Path(sys.argv[1]))
print(json.dumps({"dropped": dropped, "modules": sorted(sys.modules)}))
"""


def _preload(dags_folder: Path) -> dict[str, list[str]]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(dags_folder)], env=env, cwd="/", capture_output=True,
                          text=True, timeout=120, check=True)
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_dags_libraries_stay_loaded_and_the_projects_modules_are_left_to_the_tasks() -> None:
    result = _preload(REPO / "dags")
    modules = set(result["modules"])
    # what parsing the DAG files costs a task process: Cosmos's DAG building, Airflow's task decorators, pydantic
    assert {"cosmos.converter", "cosmos.airflow.task_group", "airflow.providers.standard.decorators.python",
            "pydantic_settings"} <= modules
    # the project's code is imported afresh by every task, so an edit takes effect at the next one
    project = {name for name in modules if name.split(".")[0] in ("candlecast_orchestration", "cycle", "ml", "extract")
               or (name.startswith("candlecast.") and name != "candlecast.airflow_executor")}
    assert project == set()
    assert {"candlecast_orchestration.dbt", "candlecast.settings", "cycle.steps"} <= set(result["dropped"])
    assert not [name for name in modules if "candlecast_hourly" in name]  # the parsed DAG modules themselves


def test_a_dag_folder_that_does_not_parse_costs_only_the_preload(tmp_path: Path) -> None:
    (tmp_path / "broken_dag.py").write_text("from airflow.sdk import dag\nimport no_such_module_anywhere\n")
    result = _preload(tmp_path)  # raises CalledProcessError if the preload raised
    assert not [name for name in result["modules"] if "broken_dag" in name or name == "no_such_module_anywhere"]


def test_the_local_airflow_runs_it_unless_told_otherwise() -> None:
    env = airflow_local.airflow_env(airflow_local.local_airflow({}), {})
    assert env["AIRFLOW__CORE__EXECUTOR"] == airflow_executor.NAME == airflow_local.PRELOADING_LOCAL_EXECUTOR
    stock = airflow_local.airflow_env(airflow_local.local_airflow({}), {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
    assert stock["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
