"""FastMCP middleware feeding :mod:`mcp_server.metrics`: how long each MCP request took and
how each tool call ended.

:class:`OperationTimer` goes first in the chain, so it times everything the server does for a
request (``mcp_server_operation_duration_seconds``, with the OpenTelemetry MCP conventions'
``error.type``: ``tool_error`` for an ``isError`` result, the JSON-RPC code for an error
answer). :class:`ToolOutcomes` goes last, next to the tool, where a
:class:`~mcp_server.errors.ToolFailed` still carries its outcome.
"""

from __future__ import annotations

import time
from typing import Any

import mcp_types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.shared.exceptions import MCPError

from mcp_server.errors import ToolFailed
from mcp_server.metrics import OTHER, ServerMetrics

# The MCP methods a client may send (any other method name is counted as "other").
MCP_METHODS = frozenset({
    "initialize", "ping", "server/discover", "tools/list", "tools/call", "prompts/list",
    "prompts/get", "resources/list", "resources/read", "resources/templates/list",
    "resources/subscribe", "resources/unsubscribe", "completion/complete", "logging/setLevel",
})
# JSON-RPC error codes worth a series of their own; any other code is "_OTHER".
KNOWN_CODES = frozenset({-32700, -32600, -32601, -32602, -32603, -32042, -32002, -32001})


def target_name(message: Any) -> str | None:
    """The tool of a ``tools/call`` (the prompt of a ``prompts/get``), whichever shape the
    dispatch layer handed over."""
    name = getattr(message, "name", None)
    if name is None:
        name = getattr(getattr(message, "params", None), "name", None)
    return name if isinstance(name, str) else None


def is_error_result(result: Any) -> bool:
    """Whether a request's result is a tool's ``isError`` answer (either spelling)."""
    return bool(getattr(result, "is_error", False) or getattr(result, "isError", False))


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ToolError):
        return "tool_error"
    if isinstance(exc, MCPError):
        code = exc.error.code
        return str(code) if code in KNOWN_CODES else "_OTHER"
    return type(exc).__name__  # chosen by code, never by a caller


class OperationTimer(Middleware):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def on_request(
        self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]
    ) -> Any:
        method = context.method if context.method in MCP_METHODS else OTHER
        tool = self._metrics.tool(target_name(context.message)) if method == "tools/call" else ""
        started = time.perf_counter()
        error = ""
        try:
            result = await call_next(context)
            if is_error_result(result):
                error = "tool_error"
            return result
        except BaseException as exc:
            error = _error_type(exc)
            raise
        finally:
            self._metrics.operation.labels(method, tool, error).observe(
                time.perf_counter() - started)


class ToolOutcomes(Middleware):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name = context.message.name
        try:
            result = await call_next(context)
        except ToolFailed as exc:
            self._metrics.outcome(name, exc.outcome)
            raise
        except Exception:
            self._metrics.outcome(name, "tool_error")
            raise
        is_error = bool(getattr(result, "is_error", False))
        self._metrics.outcome(name, "tool_error" if is_error else "success")
        return result
