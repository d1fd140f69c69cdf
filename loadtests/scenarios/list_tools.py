"""List tools: ``tools/list`` on both protocol versions; the answer must offer the built-in
tools and the provider tool the runner enabled."""

from __future__ import annotations

from typing import Any

from locust import tag, task

from loadtests.scenarios import mcp
from loadtests.scenarios.common import GatehouseUser

EXPECTED = frozenset({"echo", "whoami", "github_whoami"})


def _lists_the_tools(result: dict[str, Any]) -> str | None:
    names = {tool.get("name") for tool in result.get("tools", []) if isinstance(tool, dict)}
    missing = EXPECTED - names
    return f"tools/list lacks {sorted(missing)}" if missing else None


def list_tools(user: GatehouseUser, version: str) -> None:
    mcp.rpc(user, "tools/list", version, "tools/list", check=_lists_the_tools)


class ListToolsUser(GatehouseUser):
    scenario = "list_tools"

    @tag("list_tools")
    @task
    def legacy(self) -> None:
        list_tools(self, mcp.LEGACY)

    @tag("list_tools")
    @task
    def current(self) -> None:
        list_tools(self, mcp.CURRENT)
