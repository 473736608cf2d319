"""Background servers the project starts (MariaDB, Airflow) are tracked by their pid files.

A pid file outlives its process (a crash, a SIGKILL, a reboot), and the kernel hands pids out again: after a
while the number in it can name any other program. So a pid counts as ours only when the process also runs
the expected executable with the expected arguments and was started before the pid file was written; a pid
file that names anything else is stale: reported and removed, never signalled.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The pid file is written after its process started; file-system timestamps and the kernel's start time are
# both coarse, so a process started this much after the file's mtime still counts as having written it.
START_TIME_SLACK_S = 2.0


@dataclass(frozen=True)
class Identity:
    """What the process we started looks like: its executable and arguments its command line must hold."""

    executable: str  # resolved path (symlinks followed), as /proc/PID/exe shows it
    arguments: tuple[str, ...]

    def describe(self) -> str:
        return f"{Path(self.executable).name} {' '.join(self.arguments)}"


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


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def live_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None (no file, garbage, a stale pid, a zombie).

    A zombie answers signal 0 but has exited (its files and sockets are closed; only its parent has not
    collected its status yet), so it counts as gone: a server killed with SIGKILL lingers as one for a second
    or more, and longer when the process that started it never reaps it.
    """
    pid = read_pid(pid_file)
    if pid is None:
        return None
    state = process_state(pid)
    if state is None or state in ("Z", "X"):
        return None
    return pid


def mismatch(pid: int, identity: Identity, written_at: float) -> str | None:
    """Why the live process ``pid`` is not the one ``identity`` describes (None when it is, or may be).

    A process that is exiting has an empty command line and no executable while it still holds its files and
    port: that one may well be ours, dying, so it is not called someone else's.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        if not cmdline:
            return None
        started = proc.create_time()
        try:
            exe = proc.exe()
        except psutil.AccessDenied:  # another user's process: the command line still tells
            exe = ""
    except psutil.NoSuchProcess:
        return None  # gone meanwhile: nothing to signal either way
    except psutil.AccessDenied:
        return f"pid {pid} belongs to another user"
    shown = " ".join(cmdline)[:200]
    if exe and os.path.realpath(exe) != identity.executable:
        return f"pid {pid} runs {exe} ({shown}), not {identity.executable}"
    if not all(arg in cmdline for arg in identity.arguments):
        return f"pid {pid} runs {shown!r}, not {identity.describe()!r}"
    if started > written_at + START_TIME_SLACK_S:
        return f"pid {pid} ({shown}) started after the pid file was written: a recycled pid"
    return None


@dataclass(frozen=True)
class PidFileCheck:
    pid: int | None  # our live process
    stale: str | None  # the file names a live process that is not ours: why (None otherwise)


def check(pid_file: Path, identity: Identity) -> PidFileCheck:
    pid = live_pid(pid_file)
    if pid is None:
        return PidFileCheck(None, None)
    try:
        written_at = pid_file.stat().st_mtime
    except FileNotFoundError:
        return PidFileCheck(None, None)
    problem = mismatch(pid, identity, written_at)
    return PidFileCheck(None, problem) if problem else PidFileCheck(pid, None)


def our_pid(pid_file: Path, identity: Identity) -> int | None:
    """The pid in ``pid_file`` if it is the live process ``identity`` describes, else None."""
    return check(pid_file, identity).pid


def discard_stale(pid_file: Path, identity: Identity) -> str | None:
    """Remove ``pid_file`` unless it names our live process; says what was removed and why (None: nothing).

    Only the file goes: the process it named is left alone, whatever it is.
    """
    result = check(pid_file, identity)
    if result.pid is not None or not pid_file.exists():
        return None
    reason = result.stale or f"pid {read_pid(pid_file)} is not running"
    pid_file.unlink(missing_ok=True)
    message = f"stale pid file {pid_file} removed ({reason}); nothing was signalled"
    log.warning(message)
    return message
