"""The demo's orchestration step: parse the DAGs as Airflow's DAG processor would, and say how to run them.

Parsing happens in a child interpreter, so Airflow's logging set-up stays out of the demo's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from candlecast.airflow_local import airflow_env, local_airflow
from candlecast.dbt_runner import run_dbt
from candlecast.settings import REPO_ROOT

_PARSE = """
import json, time
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
d = Path(__import__("sys").argv[1])
out = {}
for name in ("candlecast_hourly.py", "candlecast_weekly_retrain.py"):
    t = time.perf_counter()
    bag = BundleDagBag(dag_folder=d / name, bundle_path=d, bundle_name="dags-folder")
    elapsed = time.perf_counter() - t
    if bag.import_errors:
        raise SystemExit(f"{name}: {bag.import_errors}")
    for dag in bag.dags.values():
        cron = getattr(dag.timetable, "expression", str(dag.timetable))
        out[dag.dag_id] = {"seconds": elapsed, "schedule": cron + " UTC", "tasks": [t.task_id for t in dag.tasks]}
print(json.dumps(out))
"""


def describe_dags_step() -> str:
    airflow = local_airflow()
    # Cosmos renders the DAGs from the manifest, so it must describe the current project.
    run_dbt(["parse"], env=os.environ, args=["--quiet"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(airflow_env(airflow, env))
    proc = subprocess.run([sys.executable, "-c", _PARSE, str(REPO_ROOT / "dags")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the DAGs do not parse: {proc.stderr.strip()[-800:]}")
    dags = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = []
    for dag_id, info in dags.items():
        dbt = [t for t in info["tasks"] if t.startswith(("features.", "accuracy."))]
        other = [t for t in info["tasks"] if t not in dbt]
        lines.append(f"{dag_id} ({info['schedule']}, parsed in {info['seconds']:.2f} s): {len(dbt)} dbt tasks "
                     f"rendered by Cosmos + {', '.join(other)}")
    lines.append(f"run them: `make airflow`, then {airflow.url} (user admin, password in {airflow.password_file}); "
                 "offline, `make replay` and COINBASE_API_URL=http://127.0.0.1:8765")
    return "\n".join(lines)
