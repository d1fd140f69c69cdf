"""The tools every mcp_server offers, whatever is configured: ``echo`` and ``count`` are
diagnostic, ``whoami`` shows the caller; none touches a provider.

A tool's docstring is the description the model reads, so it is plain text (Markdown at most):
no reStructuredText roles or double backticks.
"""

from __future__ import annotations

from fastmcp import Context, FastMCP

from mcp_server.auth import current_caller

MAX_ECHO_CHARS = 100_000


def register(mcp: FastMCP) -> None:
    # async, though they await nothing: FastMCP runs a plain ``def`` tool on a worker thread,
    # which cost echo about 0.4 ms of CPU per call here.
    @mcp.tool
    async def echo(text: str) -> str:
        """Return `text` unchanged: a round trip through the gateway, touching nothing else."""
        return text[:MAX_ECHO_CHARS]

    @mcp.tool
    async def whoami() -> dict[str, object]:
        """The organisation, user, roles and request id this call was made as."""
        caller = current_caller()
        return {
            "org_id": caller.org_id,
            "user_id": caller.user_id,
            "roles": list(caller.roles),
            "request_id": caller.request_id,
            "session_id": caller.session_id,
        }

    @mcp.tool
    async def count(to: int, ctx: Context) -> str:
        """Count from 1 to `to` (at most 100), reporting progress: a streamed response."""
        to = max(1, min(to, 100))
        for step in range(1, to + 1):
            await ctx.report_progress(step, to, f"step {step}")
        return f"counted to {to}"
