"""Tool execution: ``echo`` (both protocol versions), ``whoami``, and ``github_whoami``, a
provider tool answered by the loopback provider for a user whose GitHub grant is connected
(the runner connects it when the user starts: :mod:`.grants`)."""

from __future__ import annotations

from typing import Any

from locust import tag, task

from loadtests.scenarios import mcp
from loadtests.scenarios.common import GatehouseUser
from loadtests.scenarios.mcp import structured

TEXT = "load test: héllo"


def echoed(result: dict[str, Any]) -> str | None:
    """The text comes back as structured content (2026-07-28) or as text content."""
    texts = [c.get("text") for c in result.get("content", []) if isinstance(c, dict)]
    if structured(result).get("result") == TEXT or TEXT in texts:
        return None
    return f"echo answered {str(result)[:200]}"


def echo(user: GatehouseUser, version: str) -> None:
    mcp.call_tool(user, version, "echo", {"text": TEXT}, echoed)


def whoami(user: GatehouseUser) -> None:
    def as_me(result: dict[str, Any]) -> str | None:
        me = structured(result)
        if (me.get("org_id"), me.get("user_id")) != (user.org, user.user_id):
            return f"whoami answered as {me.get('org_id')}/{me.get('user_id')}"
        return None

    mcp.call_tool(user, mcp.CURRENT, "whoami", {}, as_me)


def _github_login(result: dict[str, Any]) -> str | None:
    return None if "bench-user" in str(result.get("content")) else "no GitHub login in answer"


def github_whoami(user: GatehouseUser) -> None:
    mcp.call_tool(user, mcp.CURRENT, "github_whoami", {}, _github_login)


class ToolUser(GatehouseUser):
    scenario = "tools"

    def on_start(self) -> None:
        super().on_start()
        self.connect_grant("tool")

    @tag("tools")
    @task(3)
    def echo_current(self) -> None:
        echo(self, mcp.CURRENT)

    @tag("tools")
    @task(1)
    def echo_legacy(self) -> None:
        echo(self, mcp.LEGACY)

    @tag("tools")
    @task(2)
    def whoami_tool(self) -> None:
        whoami(self)

    @tag("tools")
    @task(2)
    def provider_tool(self) -> None:
        github_whoami(self)
