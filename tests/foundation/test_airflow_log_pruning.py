"""Task log pruning for ``python -m candlecast.airflow_local clean``: files by age, folders once empty."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from candlecast.airflow_local import prune_logs

CUTOFF = datetime(2026, 1, 1, tzinfo=UTC)


def _log(path: Path, written: datetime) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("log\n")
    os.utime(path, (written.timestamp(), written.timestamp()))
    return path


def test_files_older_than_the_cutoff_go_with_the_folders_they_leave_empty(tmp_path: Path) -> None:
    old_run = tmp_path / "dag_id=candlecast_hourly" / "run_id=a"
    mixed_run = tmp_path / "dag_id=candlecast_hourly" / "run_id=b"
    old = [_log(old_run / "task_id=extract" / "attempt=1.log", datetime(2025, 11, 1, tzinfo=UTC)),
           _log(old_run / "task_id=predict" / "attempt=1.log", datetime(2025, 12, 31, 23, tzinfo=UTC)),
           _log(mixed_run / "task_id=extract" / "attempt=1.log", datetime(2025, 12, 1, tzinfo=UTC))]
    new = [_log(mixed_run / "task_id=extract" / "attempt=2.log", datetime(2026, 1, 1, 1, tzinfo=UTC)),
           _log(tmp_path / "dag_processor" / "latest.log", datetime(2026, 2, 1, tzinfo=UTC))]

    assert prune_logs(tmp_path, CUTOFF) == 3

    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in new)
    assert not old_run.exists()
    assert (mixed_run / "task_id=extract").is_dir()
    assert tmp_path.is_dir()  # the log folder itself stays


def test_a_missing_log_folder_prunes_nothing(tmp_path: Path) -> None:
    assert prune_logs(tmp_path / "never-written", CUTOFF) == 0
