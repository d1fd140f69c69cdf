"""MCP connection: what a client does when it connects, on both protocol versions.

2025-11-25: ``initialize`` then ``notifications/initialized``; 2026-07-28: ``server/discover``.
Both answers must name Gatehouse as the server (and the version asked for).
"""

from __future__ import annotations

from typing import Any

from locust import tag, task

from loadtests.scenarios import mcp
from loadtests.scenarios.common import GatehouseUser


def _initialized(result: dict[str, Any]) -> str | None:
    if result.get("protocolVersion") != mcp.LEGACY:
        return f"initialize chose {result.get('protocolVersion')!r}"
    return None if result.get("serverInfo", {}).get("name") == "Gatehouse" else "no serverInfo"


def _discovered(result: dict[str, Any]) -> str | None:
    if mcp.CURRENT not in result.get("supportedVersions", []):
        return f"discover offers {result.get('supportedVersions')!r}"
    return None


def initialize(user: GatehouseUser) -> None:
    mcp.rpc(user, "initialize", mcp.LEGACY, "initialize", mcp.INITIALIZE, check=_initialized)
    mcp.initialized(user)


def discover(user: GatehouseUser) -> None:
    mcp.rpc(user, "server/discover", mcp.CURRENT, "server/discover", check=_discovered)


class ConnectUser(GatehouseUser):
    """Connects again and again, on one protocol version or the other."""

    scenario = "connect"

    @tag("connect")
    @task
    def initialize_legacy(self) -> None:
        initialize(self)

    @tag("connect")
    @task
    def discover_current(self) -> None:
        discover(self)
