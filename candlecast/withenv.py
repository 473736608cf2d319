"""Run a command with the connection settings in its environment (env vars win over the local file).

dbt reads its profile through ``env_var()``; this is how `make dbt-build` and friends hand it the
generated local credentials without them ever being written into a tracked file.

    python -m candlecast.withenv dbt build --project-dir dbt_project --profiles-dir .
"""

from __future__ import annotations

import os
import sys

from candlecast.settings import effective_env


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m candlecast.withenv COMMAND [ARGS...]", file=sys.stderr)
        return 2
    os.execvpe(argv[0], argv, effective_env())
    return 127  # execvpe does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
