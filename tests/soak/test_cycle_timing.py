"""The soak's cycle-time figures, on made-up cycles (no database): the fault cycles are judged against the
fault-free cycles around them, so a machine that slows down over the fortnight does not count as a fault."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tools.soak.harness import Attempt, CycleRun
from tools.soak.run import fault_cycle_ratios

START = datetime(2024, 1, 1)


def _cycle(k: int, *attempts: tuple[float, str], fault: str | None = None) -> CycleRun:
    return CycleRun(k=k, end=START + timedelta(hours=k), via="process", fault=fault,
                    attempts=[Attempt(START, seconds, status) for seconds, status in attempts])


def test_each_fault_cycle_is_compared_with_the_fault_free_cycles_near_it() -> None:
    # the machine runs at 10 s a cycle for the first day, then at 15 s; one fault each day
    cycles = [_cycle(k, (10.0 if k < 24 else 15.0, "ok")) for k in range(48)]
    cycles[5] = _cycle(5, (11.0, "ok"), fault="late candle")
    cycles[30] = _cycle(30, (16.5, "failed"), (15.0, "failed"), fault="outage")
    ratios = fault_cycle_ratios(cycles, window_hours=3)
    # the fault cycle and the one after it (which catches up) are judged; the next is a plain 10 s cycle
    assert ratios[5] == pytest.approx(1.1)
    assert ratios[6] == pytest.approx(1.0)
    assert ratios[30] == pytest.approx(1.1)  # its slowest attempt, against the 15 s cycles of its day
    assert set(ratios) == {5, 6, 30, 31}
    # against the whole run's fault-free median (12.5 s) the slow day's ordinary cycles would look like faults
    assert 15.0 / 12.5 == pytest.approx(1.2)


def test_a_fault_cycle_with_no_fault_free_cycle_near_it_is_not_judged() -> None:
    cycles = [_cycle(0, (12.0, "failed"), fault="outage"), _cycle(1, (10.0, "ok")), _cycle(10, (10.0, "ok"))]
    assert fault_cycle_ratios(cycles, window_hours=3) == {}
