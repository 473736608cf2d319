"""What the outside world hands the project (CLI flags, env vars, Airflow Variables) is checked here, at the edge.

A product id becomes SQL values, file and folder names (the model store, backtest charts) and log lines; a
schema base becomes database names. Both are held to a plain shape, ASCII only (a Cyrillic "А" looks like
"A" and is not), so nothing downstream has to wonder what it was given. The error names the value and where
it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# Coinbase's shape: base and quote currency, upper-case letters and digits, e.g. BTC-USD, ETH-EUR, 1INCH-USD.
PRODUCT_ID = re.compile(r"[A-Z0-9]{2,10}-[A-Z0-9]{2,10}", re.ASCII)
# A plain identifier; the longest suffix added to it ("_intermediate", 13) keeps every name within 64.
SCHEMA_BASE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}", re.ASCII)


class InvalidInput(ValueError):
    """A value from outside does not have the shape it must; the message names the value and its source."""


def _named(value: object, source: str | None) -> str:
    return f"{value!r}" + (f" (from {source})" if source else "")


def product_id(value: str, source: str | None = None) -> str:
    """``value`` if it is a product id like ``BTC-USD``; ``InvalidInput`` naming it and ``source`` otherwise."""
    if not isinstance(value, str) or not PRODUCT_ID.fullmatch(value):
        raise InvalidInput(
            f"{_named(value, source)} is not a product id: 2-10 upper-case ASCII letters or digits, '-', "
            "2-10 more, e.g. BTC-USD"
        )
    return value


def product_id_arg(value: str) -> str:
    """``type=`` for a CLI's ``--product``: argparse prints the message and exits with status 2."""
    import argparse

    try:
        return product_id(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def product_ids(values: str | Iterable[str], source: str) -> tuple[str, ...]:
    """A comma-separated list (or a sequence) of product ids, each checked; at least one (blanks between
    commas are skipped, so a trailing comma is harmless)."""
    items = values.split(",") if isinstance(values, str) else list(values)
    ids = tuple(product_id(item.strip(), source) for item in items if item.strip())
    if not ids:
        raise InvalidInput(f"{_named(values, source)} names no product")
    return ids


def schema_base(value: str, source: str | None = None) -> str:
    """``value`` if it is a plain identifier fit to prefix the project's database names."""
    if not isinstance(value, str) or not SCHEMA_BASE.fullmatch(value):
        raise InvalidInput(
            f"schema base {_named(value, source)} is not a plain identifier: ASCII letters, digits and '_', not "
            "starting with a digit, at most 51 characters"
        )
    return value


def folder_within(value: str, root: Path, source: str | None = None) -> Path:
    """``value`` as an absolute folder inside ``root`` (for a path a less trusted hand sets: an Airflow Variable
    that any UI user with edit rights can change); ``..``, symlink tricks and other places are refused."""
    path = Path(value)
    resolved = path.resolve()
    if not path.is_absolute() or ".." in path.parts or not resolved.is_relative_to(root.resolve()):
        raise InvalidInput(f"{_named(value, source)} must be an absolute folder inside {root}")
    return resolved
