"""SQL identifiers: the one way to put a database or table name into a statement."""

from __future__ import annotations

MAX_IDENTIFIER_LENGTH = 64  # MariaDB's limit for database, table and column names


def check_identifier(name: str) -> str:
    """``name`` if MariaDB can take it quoted; ``ValueError`` naming it otherwise.

    Refused: empty, longer than 64 characters, a backtick (never needed here, and the one character quoting
    would have to escape), control characters, and a trailing space (MariaDB strips or refuses it).
    """
    problem = None
    if not name:
        problem = "is empty"
    elif len(name) > MAX_IDENTIFIER_LENGTH:
        problem = f"is longer than {MAX_IDENTIFIER_LENGTH} characters"
    elif "`" in name:
        problem = "contains a backtick"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        problem = "contains a control character"
    elif name.endswith(" "):
        problem = "ends with a space"
    if problem:
        raise ValueError(f"SQL identifier {name!r} {problem}")
    return name


def quote_ident(name: str) -> str:
    """```name```, for a database, table or column name in a statement (refusing what it cannot quote safely)."""
    return f"`{check_identifier(name)}`"
