"""JSON with exact decimals: prices are parsed as ``Decimal`` from their text, never through a float."""

from __future__ import annotations

import json
import math
from decimal import Decimal


def loads(text: str) -> object:
    # NaN/Infinity are not JSON, but Python's parser accepts them; keep them as floats so validation can
    # name them ("not a finite number") instead of the parser failing the whole answer.
    return json.loads(text, parse_float=Decimal, parse_constant=float)


def dumps(value: object) -> str:
    """Compact JSON in which a ``Decimal`` is written as the number it is (``json`` would refuse it)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(float(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))
