"""Tool visibility per session: a session's allow-list (carried in the internal assertion)
hides other tools from ``tools/list`` and refuses them in ``tools/call``."""

from __future__ import annotations

from collections.abc import Sequence

import mcp_types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool, ToolResult

from mcp_server.auth import current_caller
from mcp_server.errors import ToolFailed


class SessionToolScope(Middleware):
    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        tools = await call_next(context)
        allowed = current_caller().allowed_tools
        if allowed is None:
            return tools
        return [tool for tool in tools if tool.name in allowed]

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        allowed = current_caller().allowed_tools
        if allowed is not None and context.message.name not in allowed:
            raise ToolFailed(f"the tool {context.message.name!r} is not allowed in this session")
        return await call_next(context)
