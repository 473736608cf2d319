"""The one way the project starts dbt: the demo, the tests, the benchmarks, the hourly cycle and `make`.

dbt lives in its own virtualenv (``.venv-dbt``: dbt-mysql 1.7 pins cannot coexist with Airflow 3), so it
cannot be imported; it runs as a subprocess, without a shell, with ``--project-dir``/``--profiles-dir`` set
and exactly the environment the caller hands over. ``profiles.yml`` reads the connection (password included)
with ``env_var()``, so no secret is ever put on the command line. Cosmos starts dbt on its own inside Airflow
(``dags/``); everything else comes through here.

    .venv/bin/python -m candlecast.dbt_runner build --select +features_latest   # env vars over the credentials file
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candlecast.role_env import role_env
from candlecast.settings import REPO_ROOT, effective_env
from candlecast.settings.dbt import DbtSettings, dbt_settings

log = logging.getLogger(__name__)

# dbt's own telemetry off; captured output in plain text, so it can be read and quoted in errors.
NO_TELEMETRY = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
NO_COLORS = {"DBT_USE_COLORS": "False"}
TAIL_CHARS = 4000


def describe(command: Sequence[str], select: Sequence[str] = (), args: Sequence[str] = ()) -> str:
    """``dbt build --select a b --full-refresh``: what ran, for messages and logs (paths left out)."""
    parts = ["dbt", *command]
    if select:
        parts += ["--select", *select]
    return " ".join([*parts, *args])


class DbtError(RuntimeError):
    """A dbt command failed (or could not start); the message names it and quotes the end of its output."""

    def __init__(self, what: str, reason: str, output: str = "") -> None:
        tail = output.strip()[-TAIL_CHARS:]
        super().__init__(f"{what} failed: {reason}" + (f"\n--- end of dbt's output ---\n{tail}" if tail else ""))
        self.what = what
        self.output = output


@dataclass(frozen=True)
class DbtResult:
    """One finished dbt invocation."""

    command: tuple[str, ...]
    select: tuple[str, ...]
    args: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, interleaved as dbt wrote them ("" when not captured)
    elapsed_s: float
    target_path: Path  # where its artifacts (run_results.json, manifest.json, ...) are

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return describe(self.command, self.select, self.args)

    def artifact(self, name: str) -> dict[str, Any]:
        """A JSON artifact of this run, e.g. ``run_results.json``."""
        path = self.target_path / name
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DbtError(self.describe(), f"cannot read its artifact {path}: {exc}") from exc

    def last_line_with(self, marker: str) -> str:
        """dbt's last output line containing ``marker``, without its timestamp and dot leaders ("" if none)."""
        lines = [line for line in self.output.splitlines() if marker in line]
        if not lines:
            return ""
        return re.sub(r"\s*\.{3,}\s*", " ", lines[-1].split("  ", 1)[-1]).strip()

    def summary(self) -> str:
        """``PASS=62 WARN=0 ERROR=0 SKIP=0 TOTAL=62`` (the counts of dbt's ``Done.`` line), or ``ok``."""
        done = self.last_line_with("Done. ")
        return done.split("Done. ", 1)[-1] if done else "ok"


@dataclass
class DbtProcess:
    """A started dbt invocation; ``wait()`` gives its result (so independent runs can overlap)."""

    process: subprocess.Popen[str]
    command: tuple[str, ...]
    select: tuple[str, ...]
    args: tuple[str, ...]
    target_path: Path
    started: float = field(default_factory=time.perf_counter)

    def wait(self, timeout: float | None = None, check: bool = True) -> DbtResult:
        what = describe(self.command, self.select, self.args)
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.process.kill()
            output, _ = self.process.communicate()
            raise DbtError(what, f"no answer in {timeout:g} s, killed", output or "") from exc
        result = DbtResult(self.command, self.select, self.args, self.process.returncode, output or "",
                           time.perf_counter() - self.started, self.target_path)
        log.info("%s: exit %d in %.1f s", what, result.returncode, result.elapsed_s)
        if check and not result.ok:
            raise DbtError(what, f"exit {result.returncode}", result.output)
        return result


def start_dbt(command: Sequence[str], *, env: Mapping[str, str], select: Sequence[str] = (),
              args: Sequence[str] = (), target_path: Path | None = None, log_path: Path | None = None,
              settings: DbtSettings | None = None, capture: bool = True,
              pass_fds: Sequence[int] = ()) -> DbtProcess:
    """Start ``dbt <command> [--select ...] [args]`` on the project with ``env`` as its whole environment.

    ``env`` carries the connection (``profiles.yml`` reads it), cut down to the transformer's password (no other
    role's reaches dbt, nor the credentials file); nothing else of this process leaks in.
    ``target_path``/``log_path`` keep a run's artifacts and logs apart (tests, benchmarks); by default dbt
    writes them under the project. ``capture=False`` lets the output go to this process's own stdout.
    ``pass_fds`` stay open in dbt (the cycle's lock: a dbt left running by a killed cycle holds it until done).
    """
    settings = settings or dbt_settings(env)
    command, select, args = tuple(command), tuple(select), tuple(args)
    cmd = [str(settings.executable), *command]
    if select:
        cmd += ["--select", *select]
    cmd += [*args, "--project-dir", str(settings.project_dir), "--profiles-dir", str(settings.profiles_dir)]
    if target_path is not None:
        cmd += ["--target-path", str(target_path)]
    if log_path is not None:
        cmd += ["--log-path", str(log_path)]
    what = describe(command, select, args)
    log.info("starting %s on %s", what, settings.project_dir)
    try:
        process = subprocess.Popen(
            # dbt connects as the transformer: whatever the caller holds, dbt gets that role's password only.
            cmd, env={**role_env("transformer", env, required=False), **NO_TELEMETRY, **(NO_COLORS if capture else {})},
            cwd=REPO_ROOT, text=True,
            stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None,
            pass_fds=tuple(pass_fds),
        )
    except OSError as exc:
        raise DbtError(what, f"cannot start {settings.executable} ({exc.strerror}); set CANDLECAST_DBT_EXECUTABLE "
                             "or run `make deps`") from exc
    return DbtProcess(process, command, select, args, target_path or settings.project_dir / "target")


def run_dbt(command: Sequence[str], *, env: Mapping[str, str], select: Sequence[str] = (),
            args: Sequence[str] = (), target_path: Path | None = None, log_path: Path | None = None,
            settings: DbtSettings | None = None, check: bool = True, timeout: float | None = None,
            capture: bool = True, pass_fds: Sequence[int] = ()) -> DbtResult:
    """Run dbt to the end (see ``start_dbt``); raises ``DbtError`` on a non-zero exit when ``check``."""
    return start_dbt(command, env=env, select=select, args=args, target_path=target_path, log_path=log_path,
                     settings=settings, capture=capture, pass_fds=pass_fds).wait(timeout, check)


def main(argv: list[str]) -> int:
    """``python -m candlecast.dbt_runner <dbt args>``: dbt on the project with the connection settings (env
    vars winning over the local credentials file), output straight to the terminal."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m candlecast.dbt_runner DBT_COMMAND [DBT_ARGS...]   "
              "(e.g. build --select +features_latest)", file=sys.stderr)
        return 2
    try:
        result = run_dbt(argv[:1], env=effective_env(), args=argv[1:], check=False, capture=False)
    except DbtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
