"""The composed system prompt, delivered to agents inside MCP on ``/mcp/{session_id}``.

* ``initialize`` (2025-11-25) and ``server/discover`` (2026-07-28) answers carry it as the
  server's ``instructions``;
* ``prompts/list`` answers gain a prompt named ``system``, beside mcp_server's own prompts;
* ``prompts/get`` for ``system`` is answered by the gateway itself.

Answers are rewritten whether mcp_server sent them as JSON or as an SSE stream; only these few
small answers are buffered, every other exchange streams through untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

SYSTEM_PROMPT = "system"
REWRITTEN_METHODS = frozenset({"initialize", "server/discover", "prompts/list"})
MODERN_PROTOCOL = "2026-07-28"
_DESCRIPTION = (
    "The session's system prompt, composed from the global, organisation, user and session layers."
)

_DATA_LINE = re.compile(rb"^data: ?(.*?)(\r?)$", re.MULTILINE)


def _mutation(method: str, prompt: str) -> Callable[[dict[str, Any]], None]:
    def set_instructions(result: dict[str, Any]) -> None:
        result["instructions"] = prompt

    def add_system_prompt(result: dict[str, Any]) -> None:
        others = [p for p in result.get("prompts", []) if p.get("name") != SYSTEM_PROMPT]
        result["prompts"] = [{"name": SYSTEM_PROMPT, "description": _DESCRIPTION}, *others]

    return add_system_prompt if method == "prompts/list" else set_instructions


def _rewrite_message(
    raw: bytes, request_id: object, mutate: Callable[[dict[str, Any]], None]
) -> bytes:
    try:
        message = json.loads(raw)
    except ValueError:
        return raw
    if (not isinstance(message, dict) or message.get("id") != request_id
            or not isinstance(message.get("result"), dict)):
        return raw
    mutate(message["result"])
    return json.dumps(message, separators=(",", ":")).encode()


def rewrite_answer(
    body: bytes, content_type: str, method: str, request_id: object, prompt: str
) -> bytes:
    """``body`` with the answer to ``request_id`` carrying the composed ``prompt``."""
    mutate = _mutation(method, prompt)
    if content_type.startswith("text/event-stream"):
        return _DATA_LINE.sub(
            lambda m: b"data: " + _rewrite_message(m[1], request_id, mutate) + m[2], body
        )
    return _rewrite_message(body, request_id, mutate)


def system_prompt_answer(request_id: object, prompt: str, protocol: str | None) -> bytes:
    result: dict[str, Any] = {
        "description": _DESCRIPTION,
        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
    }
    if protocol == MODERN_PROTOCOL:
        result["resultType"] = "complete"
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()
