"""Background servers the project starts (MariaDB, Airflow) are tracked by their pid files."""

from __future__ import annotations

import os
from pathlib import Path


def live_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None (no file, garbage, or a stale pid)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, but another user's
        return pid
    return pid
