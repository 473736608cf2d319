"""The reference the DAG runs are held to: the same hours run by the cycle command's library functions
(``cycle.run_weekly`` / ``cycle.run_hourly``: the same steps, dbt through the one runner, no Airflow) into a
second base. Airflow, Cosmos (one dbt task per model) and the data interval must add nothing and lose nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from candlecast.hours import HOUR
from tests.dags.conftest import store_dir
from tests.support import backfill_history, differences, snapshot

__all__ = ["DirectRun", "base_env", "differences", "snapshot"]


def base_env(base: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` pointed at ``base`` and its model store (no change to ``os.environ``: this runs in a thread)."""
    return {**env, "CANDLECAST_DB_SCHEMA": base, "CANDLECAST_MODEL_STORE": str(store_dir(base))}


class DirectRun:
    """The reference, run in a background thread while the DAG runs go on (it shares nothing with them but
    the MariaDB server and the replay server): history, the weekly cycle, then two hourly cycles.
    ``wait(stage)`` blocks until that stage is done and re-raises its error."""

    STAGES = ("weekly", "hourly", "next_hourly")

    def __init__(self, env: Mapping[str, str], history_start: datetime, first_hour: datetime,
                 window_end: datetime) -> None:
        import threading

        self.env = dict(env)  # a snapshot: tests change os.environ meanwhile
        self.args = (history_start, first_hour, window_end)
        self.done = {stage: threading.Event() for stage in self.STAGES}
        # The second hour waits for this: the first hour's comparison must see the base before it.
        self.release_next_hour = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="direct-reference", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from cycle import run_hourly, run_weekly

        history_start, first_hour, window_end = self.args
        try:
            backfill_history(self.env, history_start, first_hour)
            run_weekly(window_end, env=self.env)
            self.done["weekly"].set()
            run_hourly(first_hour + HOUR, env=self.env)
            self.done["hourly"].set()
            self.release_next_hour.wait()
            run_hourly(first_hour + 2 * HOUR, env=self.env)
            self.done["next_hourly"].set()
        except BaseException as exc:
            self.error = exc
            for event in self.done.values():
                event.set()

    def wait(self, stage: str, timeout: float = 900) -> None:
        assert self.done[stage].wait(timeout), f"direct reference run: stage {stage} not done in {timeout:.0f} s"
        if self.error is not None:
            raise AssertionError(f"direct reference run failed: {self.error!r}") from self.error
