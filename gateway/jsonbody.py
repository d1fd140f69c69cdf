"""Parsing JSON request bodies the one way every endpoint shares.

Python's ``json`` module accepts ``NaN``/``Infinity`` (not JSON; PostgreSQL refuses them later),
turns ``1e999`` into infinity, and recurses once per nesting level (``RecursionError`` on deep
input). Here all three are refused up front, together with empty and non-UTF-8 bodies, as a
:class:`gateway.errors.JsonBodyError` that each caller shows in its own protocol (JSON-RPC error
or problem).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from gateway.errors import JsonBodyError

MAX_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = bytes(range(256)).translate(None, b"[]{}")
_STEP = [0] * 256
for _open, _close in (b"[]", b"{}"):
    _STEP[_open], _STEP[_close] = 1, -1


def _refuse_constant(name: str) -> Any:
    raise JsonBodyError(f"{name} is not a JSON number; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonBodyError("a number is too large to represent; numbers must be finite")
    return value


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in ``raw``, counted on the bytes (no recursion, C
    speed): strings are blanked out, then the running balance of brackets peaks at the depth."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON document in ``raw``; :class:`JsonBodyError` if it is empty, not UTF-8, not JSON,
    nested deeper than ``max_depth`` or holds a non-finite number."""
    if not raw.strip():
        raise JsonBodyError("the body is empty; send a JSON document")
    too_deep = JsonBodyError(f"JSON nested deeper than {max_depth} levels is not accepted")
    # Each level costs a bracket, so a body with few brackets needs no count.
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_depth(raw) > max_depth:
        raise too_deep
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                          parse_float=_finite_float)
    except JsonBodyError:
        raise
    except UnicodeDecodeError:
        raise JsonBodyError("the body is not UTF-8") from None
    except RecursionError:  # not reachable past the count above; kept as the last line
        raise too_deep from None
    except json.JSONDecodeError as exc:  # its message locates the problem, never echoes it
        raise JsonBodyError(f"the body is not valid JSON: {exc}") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise JsonBodyError("the body is not valid JSON: a number has too many digits") from None
