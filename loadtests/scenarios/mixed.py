"""The mixed workload: one user doing what the other scenarios do, weighted as an agent's day
goes (mostly tool calls and listing, some connecting, a little authentication trouble and
disconnecting). Its requests are named ``mixed: ...``."""

from __future__ import annotations

import random

from locust import tag, task

from loadtests.scenarios import auth, connect, disconnect, list_tools, mcp, tools
from loadtests.scenarios.common import GatehouseUser


class MixedUser(GatehouseUser):
    scenario = "mixed"

    def on_start(self) -> None:
        super().on_start()
        self.connect_grant("tool")

    @tag("mixed")
    @task(6)
    def echo(self) -> None:
        tools.echo(self, mcp.CURRENT)

    @tag("mixed")
    @task(2)
    def whoami(self) -> None:
        tools.whoami(self)

    @tag("mixed")
    @task(3)
    def provider_tool(self) -> None:
        tools.github_whoami(self)

    @tag("mixed")
    @task(3)
    def list_tools(self) -> None:
        list_tools.list_tools(self, mcp.CURRENT)

    @tag("mixed")
    @task(1)
    def list_tools_legacy(self) -> None:
        list_tools.list_tools(self, mcp.LEGACY)

    @tag("mixed")
    @task(1)
    def initialize(self) -> None:
        connect.initialize(self)

    @tag("mixed")
    @task(1)
    def discover(self) -> None:
        connect.discover(self)

    @tag("mixed")
    @task(1)
    def bad_token(self) -> None:
        random.choice((auth.expired, auth.forged))(self)

    @tag("mixed")
    @task(1)
    def session(self) -> None:
        disconnect.close_session(self)

    @tag("mixed")
    @task(1)
    def connection(self) -> None:
        disconnect.disconnect_connection(self)
        self.connect_grant("tool")  # reconnected, for the provider tool
