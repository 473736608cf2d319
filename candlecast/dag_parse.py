"""Parse DAG files as Airflow's DAG processor does, in a fresh interpreter, and report what came out.

The demo shows the result, the DAG tests check it (no import error, no data library imported, the same
tasks with either Cosmos load method) and the orchestration benchmark times it. A fresh interpreter because
that is what the DAG processor parses in (nothing of the caller's imports, and Airflow's logging set-up
stays out of the caller's output); Airflow itself is imported before the clock starts, as the processor has it.

    python -m candlecast.dag_parse DAGS_DIR FILE [FILE ...]   # one JSON object on stdout
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candlecast.settings import REPO_ROOT

DAG_FILES = ("candlecast_hourly.py", "candlecast_weekly_retrain.py")


class DagParseError(RuntimeError):
    """The parsing interpreter itself failed (not a DAG import error, which is reported in the result)."""


@dataclass(frozen=True)
class ParsedDag:
    dag_id: str
    schedule: str  # the cron expression, or the timetable's description
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class ParsedFile:
    name: str
    seconds: float
    import_errors: dict[str, str]
    dags: dict[str, ParsedDag]


@dataclass(frozen=True)
class ParseReport:
    files: dict[str, ParsedFile]
    modules: frozenset[str]  # top-level modules loaded in the parsing interpreter once every file was parsed

    @property
    def import_errors(self) -> dict[str, str]:
        return {path: error for f in self.files.values() for path, error in f.import_errors.items()}

    @property
    def dags(self) -> dict[str, ParsedDag]:
        return {dag_id: dag for f in self.files.values() for dag_id, dag in f.dags.items()}


def parse_dags(dags_dir: Path, files: Sequence[str] = DAG_FILES, env: Mapping[str, str] | None = None,
               cwd: Path = REPO_ROOT) -> ParseReport:
    """Parse each of ``files`` (in ``dags_dir``, the bundle root) in one fresh interpreter with ``env``."""
    proc = subprocess.run([sys.executable, "-m", "candlecast.dag_parse", str(dags_dir), *files],
                          env=None if env is None else dict(env), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DagParseError(f"parsing {', '.join(files)} in {dags_dir} failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip()[-2000:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    parsed = {
        name: ParsedFile(name, f["seconds"], f["import_errors"],
                         {d["dag_id"]: ParsedDag(d["dag_id"], d["schedule"], tuple(d["task_ids"])) for d in f["dags"]})
        for name, f in raw["files"].items()
    }
    return ParseReport(parsed, frozenset(raw["modules"]))


def _parse_here(dags_dir: Path, files: Sequence[str]) -> dict[str, Any]:
    """The child's side: parse with a bundle-aware DagBag, the way the DAG processor and the workers do."""
    import airflow.sdk  # noqa: F401  (loaded in the DAG processor before any file is parsed)
    from airflow.dag_processing.dagbag import BundleDagBag

    out: dict[str, Any] = {}
    for name in files:
        started = time.perf_counter()
        bag = BundleDagBag(dag_folder=dags_dir / name, bundle_path=dags_dir, bundle_name="dags-folder")
        seconds = time.perf_counter() - started
        dags = [{"dag_id": dag.dag_id, "schedule": getattr(dag.timetable, "expression", str(dag.timetable)),
                 "task_ids": [t.task_id for t in dag.tasks]} for dag in bag.dags.values()]
        out[name] = {"seconds": seconds, "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                     "dags": dags}
    return {"files": out, "modules": sorted({m.split(".")[0] for m in sys.modules})}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m candlecast.dag_parse DAGS_DIR FILE [FILE ...]", file=sys.stderr)
        return 2
    print(json.dumps(_parse_here(Path(argv[0]), argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
