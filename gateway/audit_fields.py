"""Making audited values storable and bounded before they are queued (SECURITY.md 54, 64).

Callers choose tool names, request ids and more. PostgreSQL refuses NUL in ``text`` and
``jsonb``, and UTF-8 cannot carry a lone surrogate, so one such value used to fail every batch
it was in. Such characters are written as visible escapes (NUL becomes the six characters
``\\u0000``), never dropped; an over-long value is cut with a visible marker. Either change is
noted in the entry's details under ``sanitised`` (which fields were escaped, and each cut
field's original length), so a reader knows the stored text is not the raw text.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Characters PostgreSQL text or UTF-8 cannot hold. A surrogate code point in a Python ``str`` is
# always unencodable (a proper pair is decoded to one code point long before it gets here).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
TRUNCATED = "…[truncated]"

FIELD_LIMITS = {"org_id": 255, "actor": 256, "event": 64, "target": 256, "outcome": 16,
                "request_id": 128}
DETAIL_KEY_LIMIT = 64
DETAIL_STRING_LIMIT = 256
DETAIL_ITEMS_LIMIT = 50
DETAIL_DEPTH_LIMIT = 4
DETAILS_JSON_LIMIT = 8192
_SAFE_INT = 2**63


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class Sanitiser:
    """Collects what it changed, for the entry's ``sanitised`` detail."""

    def __init__(self) -> None:
        self.escaped: set[str] = set()
        self.truncated: dict[str, int] = {}

    def text(self, value: object, limit: int, field: str) -> str:
        raw = value if isinstance(value, str) else str(value)
        text = raw
        if _UNSTORABLE.search(text):
            text = _UNSTORABLE.sub(_escape, text)
            self.escaped.add(field)
        if len(text) > limit:
            text = text[: max(limit - len(TRUNCATED), 0)] + TRUNCATED
            self.truncated[field] = len(raw)
        return text

    def details(self, details: dict[str, Any] | None) -> dict[str, Any]:
        clean = self._mapping(details or {}, "details", 0)
        if len(json.dumps(clean)) > DETAILS_JSON_LIMIT:
            self.truncated["details"] = len(json.dumps(clean))
            clean = {"keys": list(clean)[:DETAIL_ITEMS_LIMIT]}
        return clean

    def note(self) -> dict[str, Any] | None:
        """What was changed, or None when every value was stored as given."""
        note: dict[str, Any] = {}
        if self.escaped:
            note["escaped"] = sorted(self.escaped)
        if self.truncated:
            note["truncated"] = dict(sorted(self.truncated.items()))
        return note or None

    def _mapping(self, value: dict[Any, Any], path: str, depth: int) -> dict[str, Any]:
        items = list(value.items())
        if len(items) > DETAIL_ITEMS_LIMIT:
            self.truncated[path] = len(items)
        return {
            self.text(key, DETAIL_KEY_LIMIT, f"{path}.key"): self._value(item, path, depth + 1)
            for key, item in items[:DETAIL_ITEMS_LIMIT]
        }

    def _value(self, value: object, path: str, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if abs(value) < _SAFE_INT else self.text(hex(value), 64, path)
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if depth >= DETAIL_DEPTH_LIMIT and isinstance(value, dict | list | tuple):
            self.truncated[path] = len(value)
            return TRUNCATED
        if isinstance(value, dict):
            return self._mapping(value, path, depth)
        if isinstance(value, list | tuple):
            if len(value) > DETAIL_ITEMS_LIMIT:
                self.truncated[path] = len(value)
            return [self._value(v, path, depth + 1) for v in value[:DETAIL_ITEMS_LIMIT]]
        return self.text(value, DETAIL_STRING_LIMIT, path)
