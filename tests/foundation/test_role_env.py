"""One secret per process: what the project starts holds its own role's password and no other."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from candlecast.dbt_runner import start_dbt
from candlecast.role_env import role_env
from candlecast.settings import ROLES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _roles_in(data: bytes, creds: dict[str, str]) -> set[str]:
    return {role for role in ROLES if creds[f"CANDLECAST_{role.upper()}_PASSWORD"].encode() in data}


def test_a_role_env_holds_that_role_and_cannot_fall_back_to_the_file(mariadb: dict[str, str]) -> None:
    env = role_env("loader", dict(os.environ))
    assert _roles_in("\n".join(env.values()).encode(), mariadb) == {"loader"}
    assert env["CANDLECAST_CREDENTIALS_FILE"] == os.devnull
    assert _roles_in("\n".join(role_env(None, dict(os.environ)).values()).encode(), mariadb) == set()


def test_withenv_hands_the_command_its_role_only(mariadb: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "candlecast.withenv", "ml", "env"], capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=60).stdout
    assert _roles_in(out, mariadb) == {"ml"}


def test_dbt_holds_the_transformers_password_whatever_its_caller_holds(mariadb: dict[str, str], tmp_path: Path) -> None:
    caller = dict(os.environ)  # every role's password, the admin's included (the fixture exported them)
    assert _roles_in("\n".join(caller.values()).encode(), mariadb) == set(ROLES)
    dbt = start_dbt(["parse"], env=caller, target_path=tmp_path / "target", log_path=tmp_path / "logs")
    environ = b""
    deadline = time.monotonic() + 30
    while not environ and time.monotonic() < deadline:
        try:
            environ = Path(f"/proc/{dbt.process.pid}/environ").read_bytes()
        except FileNotFoundError:
            break
    dbt.wait(120, check=True)
    assert _roles_in(environ, mariadb) == {"transformer"}
