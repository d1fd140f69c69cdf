"""Loads ``queries.sql`` into a mapping from query name to SQL text."""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def _load() -> dict[str, str]:
    text = resources.files("sql").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


QUERIES = MappingProxyType(_load())
