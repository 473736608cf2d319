"""What a soak replays: which hours, when each cycle runs, and which faults hit which cycle.

Hours are numbered from the soak's start: cycle ``k`` runs the interval ``[start + k h, start + (k + 1) h)``
(its *feature hour* is ``start + k h``, the hour that just closed; it forecasts ``start + (k + 1) h``) with the
replay server's clock at the interval's end plus ``offset`` (five past, as cron or a busy scheduler would).
Every fault is tied to a cycle number, so a plan is plain data and a run repeats exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from candlecast.hours import HOUR
from tools.replay import CorrectedCandle, Fault, LateCandle, MissingCandle, ReplayServer

PRODUCT = "BTC-USD"


@dataclass(frozen=True)
class SoakPlan:
    start: datetime  # the first cycle's feature hour (UTC, on the hour)
    hours: int  # cycles run: one per hour
    history_days: int = 75  # stored before the soak (warm-up, training, validation, holdout: about 63 days)
    offset: timedelta = timedelta(minutes=5)  # cycles run at HH:05 of the replayed clock
    retry_after: timedelta = timedelta(minutes=10)  # a failed cycle is run once more, this much later
    outage_at: int = 40  # the API answers 503 to everything for ``outage_hours`` cycles from this one
    outage_hours: int = 3
    missing_at: int = 80  # this cycle's just-closed candle is never published
    late_at: int = 120  # this cycle's just-closed candle is published ``late_minutes`` after its hour closes
    late_minutes: float = 20.0
    corrected_at: int = 150  # this cycle's just-closed candle is corrected ``corrected_after`` later
    corrected_after: timedelta = timedelta(hours=22)
    truncated_at: int = 200  # the first answer this cycle gets is a 200 with half a body
    restart_before: int = 230  # MariaDB is stopped and started between the cycle before and this one
    killed_at: int = 260  # this cycle is SIGKILLed during its dbt step (then retried)
    airflow_from: int | None = None  # this cycle and the ``airflow_hours - 1`` after it run through Airflow
    airflow_hours: int = 0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start != self.start.replace(minute=0, second=0, microsecond=0):
            raise ValueError(f"the soak must start on a UTC hour, got {self.start!r}")
        faults = {"outage_at": self.outage_at + self.outage_hours - 1, "missing_at": self.missing_at,
                  "late_at": self.late_at, "corrected_at": self.corrected_at, "truncated_at": self.truncated_at,
                  "restart_before": self.restart_before, "killed_at": self.killed_at}
        for name, cycle in faults.items():
            if not 0 <= cycle < self.hours:
                raise ValueError(f"{name}={cycle} is outside the soak's {self.hours} cycles")
        if self.corrected_at + self.corrected_after / HOUR + 1 > self.hours:
            raise ValueError("the correction must come while the soak still runs")

    @classmethod
    def fortnight(cls) -> SoakPlan:
        """Fourteen days up to the bundled data's last closed hour, the last 24 hours through Airflow."""
        return cls.days(14)

    @classmethod
    def days(cls, n: int) -> SoakPlan:
        """``n`` days (at least 3) ending at the bundled data's last closed hour: the faults spread over all but
        the last day, which runs through Airflow."""
        hours = n * 24
        if n < 3:
            raise ValueError(f"a soak of {n} days leaves no room for a correction a day later; use 3 or more")
        span = hours - 24

        def at(fraction: float) -> int:
            return int(span * fraction)

        return cls(
            start=datetime(2024, 1, 9, tzinfo=UTC) - timedelta(hours=hours), hours=hours, outage_at=at(0.1),
            missing_at=at(0.22), late_at=at(0.33), corrected_at=at(0.4), truncated_at=at(0.55),
            restart_before=at(0.65), killed_at=at(0.75), airflow_from=span, airflow_hours=24,
        )

    @classmethod
    def short(cls) -> SoakPlan:
        """Every fault of the fortnight in ten hours (the correction eight hours later), for ``make test``."""
        return cls(
            start=datetime(2024, 1, 8, tzinfo=UTC), hours=10, corrected_at=0,
            corrected_after=timedelta(hours=7, minutes=30), outage_at=1, outage_hours=3, missing_at=4,
            truncated_at=5, late_at=6, restart_before=7, killed_at=7,
        )

    # --- times ---------------------------------------------------------------------------------------

    def feature_hour(self, k: int) -> datetime:
        return self.start + k * HOUR

    def end(self, k: int) -> datetime:
        """Cycle ``k``'s interval end (``--end``): the hour it forecasts."""
        return self.start + (k + 1) * HOUR

    def clock(self, k: int, attempt: int = 0) -> datetime:
        return self.end(k) + self.offset + attempt * self.retry_after

    @property
    def history_start(self) -> datetime:
        return self.start - timedelta(days=self.history_days)

    @property
    def final_clock(self) -> datetime:
        """After the last cycle, with every scheduled fault over: the API's final truth."""
        return self.end(self.hours - 1) + self.offset

    def through_airflow(self, k: int) -> bool:
        return self.airflow_from is not None and self.airflow_from <= k < self.airflow_from + self.airflow_hours

    # --- faults --------------------------------------------------------------------------------------

    def arm(self, server: ReplayServer) -> None:
        """Put every fault of the plan on the server (they fire as its clock reaches them)."""
        outage_start = self.end(self.outage_at)
        corrected_hour = self.feature_hour(self.corrected_at)
        truncated_from = self.clock(self.truncated_at) - self.offset
        server.inject(
            Fault.outage(outage_start, outage_start + self.outage_hours * HOUR, status=503),
            Fault.truncated(from_clock=truncated_from, until_clock=truncated_from + HOUR),
        )
        server.schedule(
            MissingCandle(self.feature_hour(self.missing_at), PRODUCT),
            LateCandle(self.feature_hour(self.late_at), self.late_minutes, PRODUCT),
            CorrectedCandle(corrected_hour, corrected_hour + HOUR + self.corrected_after, product_id=PRODUCT),
        )

    def fault_of(self, k: int) -> str | None:
        """The fault that hits cycle ``k`` (for the report), if any."""
        if self.outage_at <= k < self.outage_at + self.outage_hours:
            return "outage"
        named = {self.missing_at: "missing candle", self.late_at: "late candle", self.truncated_at: "truncated answer",
                 self.restart_before: "after a MariaDB restart", self.killed_at: "SIGKILL in dbt"}
        if k in named:
            return named[k]
        if k == self.corrected_at:
            return "candle corrected later"
        return None
