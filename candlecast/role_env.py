"""One secret per process: the environment handed to a process that acts as one database role.

Every role's password lives in the local credentials file (or the caller's env vars). A process started by
the project gets its own role's password and no other: extract steps the loader's, dbt the transformer's, ML
steps the ml role's, SQL consumers the reader's; the admin's is for set-up and test fixtures only. The child
is also pointed away from the credentials file (``CANDLECAST_CREDENTIALS_FILE=/dev/null``), so it cannot
fall back to reading everybody's passwords from there.

    python -m candlecast.withenv loader .venv/bin/python -m extract incremental
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from candlecast.settings import ROLES, effective_env

NO_FILE = os.devnull


def password_vars() -> tuple[str, ...]:
    """The env vars that hold a role's password, one per role."""
    return tuple(f"CANDLECAST_{role.upper()}_PASSWORD" for role in ROLES)


def role_env(role: str | None, env: Mapping[str, str] | None = None, required: bool = True) -> dict[str, str]:
    """``env`` (default: this process's, over the credentials file) with only ``role``'s password left in it.

    ``role=None`` leaves no password at all (a process that connects as nobody, or gets its role's login
    another way, e.g. an Airflow Connection). Raises ``KeyError`` naming the variable when the role's password
    is set nowhere, unless not ``required`` (``dbt parse`` needs no database).
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown database role {role!r}; one of {', '.join(ROLES)}")
    full = effective_env(env)
    keep = f"CANDLECAST_{role.upper()}_PASSWORD" if role else None
    if required and keep is not None and keep not in full:
        raise KeyError(f"{keep} is not set and the credentials file does not define it; run `make db-start` "
                       "or export the variable")
    out = {key: value for key, value in full.items() if key == keep or key not in password_vars()}
    out["CANDLECAST_CREDENTIALS_FILE"] = NO_FILE
    return out
