"""Locust scenarios against a running stack (``gatehouse up``): agents calling a tool through the
gateway, and operators managing sessions.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 20 --spawn-rate 5 --run-time 1m

Tokens come from the development issuer's key in ``.gatehouse/`` (``GATEHOUSE_DATA_DIR`` to
point elsewhere); each simulated user is a distinct user of one of ten organisations.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

from gateway.cli import devissuer

_DATA_DIR = Path(os.environ.get("GATEHOUSE_DATA_DIR", ".gatehouse"))
_NUMBERS = itertools.count()
_ECHO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "echo",
        "arguments": {"text": "load"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}


def _token(host: str, org: str, user: str) -> str:
    key = devissuer.ensure_key(_DATA_DIR / "dev_issuer.pem")
    return devissuer.mint(
        key,
        issuer=devissuer.dev_issuer(host),
        audience=host.rstrip("/") + "/mcp",
        org=org,
        user=user,
        roles=["member"],
    )


class Agent(HttpUser):
    """Calls ``echo`` through the gateway, mostly in a session of its own."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        number = next(_NUMBERS)
        host = self.host or "http://127.0.0.1:8000"
        self.auth = {
            "Authorization": "Bearer " + _token(host, f"load-{number % 10}", f"agent-{number}")
        }
        created = self.client.post("/v1/sessions", json={"name": "load"}, headers=self.auth)
        self.session_id = created.json()["id"] if created.status_code == 201 else None

    def _mcp_headers(self) -> dict[str, Any]:
        return {
            **self.auth,
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/call",
            "Mcp-Name": "echo",
        }

    @task(5)
    def echo_in_session(self) -> None:
        if self.session_id:
            self.client.post(
                f"/mcp/{self.session_id}",
                json=_ECHO,
                headers=self._mcp_headers(),
                name="/mcp/{session_id} echo",
            )

    @task(3)
    def echo_default_context(self) -> None:
        self.client.post("/mcp", json=_ECHO, headers=self._mcp_headers(), name="/mcp echo")

    @task(1)
    def read_system_prompt(self) -> None:
        if self.session_id:
            self.client.get(
                f"/v1/sessions/{self.session_id}/system-prompt",
                headers=self.auth,
                name="/v1/sessions/{id}/system-prompt",
            )

    @task(1)
    def list_sessions(self) -> None:
        self.client.get("/v1/sessions?limit=20", headers=self.auth, name="/v1/sessions")
