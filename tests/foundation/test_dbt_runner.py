"""The one dbt runner with the real dbt of ``.venv-dbt`` (``dbt ls`` parses the project and connects to nothing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from candlecast.dbt_runner import DbtError, run_dbt, start_dbt

pytestmark = pytest.mark.integration


def test_dbt_sees_only_the_env_it_is_given_and_no_password_on_its_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This process's own settings must not reach dbt: only the env handed over does.
    monkeypatch.setenv("CANDLECAST_DB_SCHEMA", "leaked_base")
    env = {**os.environ, "CANDLECAST_DB_SCHEMA": "given_base", "CANDLECAST_TRANSFORMER_PASSWORD": "pw-in-env-only"}
    started = start_dbt(["ls"], env=env, select=["features_latest"], args=["--resource-type", "model", "--output",
                        "json", "--output-keys", "name schema"], target_path=tmp_path / "t", log_path=tmp_path / "l")
    assert not any("pw-in-env-only" in str(arg) for arg in started.process.args)  # type: ignore[union-attr]
    result = started.wait(timeout=300)
    listed = [json.loads(line[line.index("{"):]) for line in result.output.splitlines() if '"schema"' in line]
    assert listed == [{"name": "features_latest", "schema": "given_base_marts"}]
    assert result.elapsed_s > 0
    assert result.artifact("manifest.json")["metadata"]["project_name"] == "candlecast"


def test_a_failed_dbt_command_is_one_error_naming_command_selection_and_dbt_output(tmp_path: Path) -> None:
    with pytest.raises(DbtError) as failure:
        run_dbt(["ls"], env=os.environ, select=["nosuchmethod:x"], target_path=tmp_path / "t",
                log_path=tmp_path / "l", timeout=300)
    message = str(failure.value)
    assert message.startswith("dbt ls --select nosuchmethod:x failed: exit ")
    assert "'nosuchmethod' is not a valid method name" in message  # dbt's own words, from the end of its output
