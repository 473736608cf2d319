"""Run a command as one database role: its login in the environment, no other role's password.

The connection settings come from env vars over the local credentials file (env vars win); the command gets
the role's password only (``candlecast.role_env``), never the whole file.

    python -m candlecast.withenv loader .venv/bin/python -m extract incremental
    python -m candlecast.withenv ml .venv/bin/python -m ml predict --last 48
"""

from __future__ import annotations

import os
import sys

from candlecast.role_env import role_env
from candlecast.settings import ROLES


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ROLES:
        print(f"usage: python -m candlecast.withenv {{{','.join(ROLES)}}} COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        env = role_env(argv[0])
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    os.execvpe(argv[1], argv[1:], env)
    return 127  # execvpe does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
