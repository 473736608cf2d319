"""The demo's orchestration step: parse the DAGs as Airflow's DAG processor would, and say how to run them.

Parsing happens in a child interpreter (``candlecast.dag_parse``), so Airflow's logging set-up stays out of the
demo's output.
"""

from __future__ import annotations

import os

from candlecast.airflow_local import airflow_env, local_airflow
from candlecast.dag_parse import DagParseError, parse_dags
from candlecast.dbt_runner import run_dbt
from candlecast.settings import REPO_ROOT


def describe_dags_step() -> str:
    airflow = local_airflow()
    # Cosmos renders the DAGs from the manifest, so it must describe the current project.
    run_dbt(["parse"], env=os.environ, args=["--quiet"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(airflow_env(airflow, env))
    try:
        report = parse_dags(REPO_ROOT / "dags", env=env)
    except DagParseError as exc:
        raise RuntimeError(f"the DAGs do not parse: {exc}") from exc
    if report.import_errors:
        raise RuntimeError(f"the DAGs do not parse: {report.import_errors}")
    lines = []
    for parsed in report.files.values():
        for dag in parsed.dags.values():
            dbt = [t for t in dag.task_ids if "." in t]  # Cosmos puts its tasks in groups (features., accuracy.)
            other = [t for t in dag.task_ids if t not in dbt]
            lines.append(f"{dag.dag_id} ({dag.schedule} UTC, parsed in {parsed.seconds:.2f} s): {len(dbt)} dbt tasks "
                         f"rendered by Cosmos + {', '.join(other)}")
    lines.append(f"run them: `make airflow`, then {airflow.url} (user admin, password in {airflow.password_file}); "
                 "offline, `make airflow OFFLINE=1` (the replay server too, the DAGs bounded to its data)")
    return "\n".join(lines)
