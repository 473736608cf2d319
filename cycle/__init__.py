"""The hourly cycle (and the weekly retrain) as a command and as library functions, without Airflow.

    python -m cycle                         # the hourly cycle for the last closed hour (cron: 5 * * * *)
    python -m cycle --end 2024-01-08T13:00  # the hourly cycle for the interval [12:00, 13:00) UTC
    python -m cycle --weekly                # the weekly retrain for the week ending at the current hour

    from cycle import run_hourly, run_weekly
    run_hourly(datetime(2024, 1, 8, 13, tzinfo=UTC))   # -> CycleResult; raises StepFailed naming the step

They run the DAGs' steps (``cycle.steps``), through the same functions the DAG tasks call and the one dbt
runner. A top-level package rather than part of ``candlecast``: the plumbing package imports no stage, and
this one drives them all. Importing it is cheap (the DAG files read the dbt selections from it at parse time).
"""

from cycle.context import Interval, RunContext
from cycle.run import CycleError, CycleResult, StepFailed, StepOutcome, run_hourly, run_weekly

__all__ = ["CycleError", "CycleResult", "Interval", "RunContext", "StepFailed", "StepOutcome", "run_hourly",
           "run_weekly"]
