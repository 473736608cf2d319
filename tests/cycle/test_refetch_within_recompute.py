"""The extractor's re-fetch window must stay below the dbt var ``recompute_hours``, or a late candle lands where
the incremental feature run never recomputes: the cycle command and the DAG tasks (both resolve their
``RunContext``) refuse such settings before anything runs, naming both values. No database needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from candlecast.settings import SettingsError
from cycle.cli import main
from cycle.context import RunContext, dbt_recompute_hours

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_dbt_project_recomputes_more_than_the_default_refetch_window() -> None:
    # the shipped values: 216 h recomputed, 24 h re-fetched; the default settings resolve
    assert dbt_recompute_hours(REPO_ROOT / "dbt_project") == 216
    ctx = RunContext.resolve({**os.environ, "CANDLECAST_EXTRACT_REFETCH_HOURS": "215"})
    assert ctx.products == ("BTC-USD",)


def test_a_refetch_window_reaching_the_recompute_window_is_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        RunContext.resolve({**os.environ, "CANDLECAST_EXTRACT_REFETCH_HOURS": "216"})
    message = str(refused.value)
    assert "CANDLECAST_EXTRACT_REFETCH_HOURS=216" in message and "recompute_hours=216" in message
    assert "dbt_project.yml" in message
    # the var is read from the project dbt runs, not assumed: a project recomputing 12 h refuses the default 24
    (tmp_path / "dbt_project.yml").write_text("name: candlecast\nvars:\n  recompute_hours: 12\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"REFETCH_HOURS=24 must be below the dbt var recompute_hours=12"):
        RunContext.resolve({**os.environ, "CANDLECAST_DBT_PROJECT_DIR": str(tmp_path)})


def test_the_cycle_command_fails_fast_on_it_with_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CANDLECAST_EXTRACT_REFETCH_HOURS", "240")
    assert main(["--end", "2024-01-08T13:00"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no step started
    assert captured.err.startswith("error: hourly cycle: settings: CANDLECAST_EXTRACT_REFETCH_HOURS=240 must be "
                                   "below the dbt var recompute_hours=216")
