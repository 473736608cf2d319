"""Background servers the project starts (MariaDB, Airflow) are tracked by their pid files."""

from __future__ import annotations

import os
from pathlib import Path


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (R, S, D, Z, ...), None when there is no such process.

    Read from ``/proc/PID/status``; where there is no /proc, "?" for a process that answers signal 0.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except FileNotFoundError:
        if Path("/proc/self/status").exists():
            return None  # /proc works, so the process is gone
    except (PermissionError, ProcessLookupError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, but another user's
        pass
    return "?"


def live_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None (no file, garbage, a stale pid, a zombie).

    A zombie answers signal 0 but has exited (its files and sockets are closed; only its parent has not
    collected its status yet), so it counts as gone: a server killed with SIGKILL lingers as one for a second
    or more, and longer when the process that started it never reaps it.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    state = process_state(pid)
    if state is None or state in ("Z", "X"):
        return None
    return pid
