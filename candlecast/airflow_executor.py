"""The local Airflow's executor: Airflow's LocalExecutor whose workers start with the DAGs' libraries imported.

Airflow 3 runs each task in a process forked from a LocalExecutor worker, and the scheduler forks those workers
when it starts. Each task process first parses its DAG file, importing Cosmos, pydantic and Airflow's task
decorators on the way: about 0.2 s of every task of the hourly chain before any work, on this machine kind
(``bench/bench_dags.py``). ``PreloadingLocalExecutor`` parses the DAG folder once in the scheduler, before the
workers are forked, so every task process inherits those libraries already imported (and shares their memory).

It keeps only libraries: the project's own modules that the parse imported (the DAG files, their helpers,
``candlecast``, ``cycle``...) are dropped again before the fork, so each task imports the code as it is on disk
and an edited DAG or step takes effect at the next task, as with the stock executor. Upgrading a library needs
an Airflow restart, as it does anyway. A DAG folder that does not parse only costs the preload: its errors are
the DAG processor's to report, and the scheduler starts either way.

The steps' own work runs in processes of their own (``cycle.step_process``), so nothing here reaches them.
"""

from __future__ import annotations

import logging
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

from airflow.executors.local_executor import LocalExecutor

NAME = f"{__name__}.PreloadingLocalExecutor"  # the value of AIRFLOW__CORE__EXECUTOR

log = logging.getLogger(__name__)


def _library_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    return tuple({Path(paths[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")})


def is_library(module: ModuleType, roots: tuple[Path, ...]) -> bool:
    """Whether ``module`` comes from the interpreter's standard library or the venv's installed packages
    (an editable install's code, which lives in the project, does not)."""
    places = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []) or [])]
    files = [Path(place).resolve() for place in places if place]
    # no file at all: built in, frozen, or made up by a library at run time (Cython's shared module)
    return all(any(f.is_relative_to(root) for root in roots) for f in files)


def preload(dags_folder: Path) -> list[str]:
    """Parse ``dags_folder`` in this process, keep the libraries that imported and drop every other module it
    brought in; the names dropped."""
    from airflow.dag_processing.dagbag import BundleDagBag

    before = set(sys.modules)
    BundleDagBag(dag_folder=dags_folder, bundle_path=dags_folder, load_op_links=False)
    roots = _library_roots()
    dropped = sorted(name for name in set(sys.modules) - before
                     if sys.modules[name] is not None and not is_library(sys.modules[name], roots))
    for name in dropped:
        del sys.modules[name]
    return dropped


class PreloadingLocalExecutor(LocalExecutor):
    """``LocalExecutor`` whose workers are forked after ``preload`` of the DAG folder (see the module's doc)."""

    def start(self) -> None:
        from airflow.configuration import conf

        dags_folder = Path(conf.get("core", "dags_folder"))
        try:
            dropped = preload(dags_folder)
            log.info("preloaded the libraries of the DAGs in %s (%d project modules left to the tasks)",
                     dags_folder, len(dropped))
        except Exception:  # only a speed-up: the tasks import what they need anyway
            log.warning("could not preload the DAGs in %s; tasks will import everything themselves", dags_folder,
                        exc_info=True)
        super().start()
