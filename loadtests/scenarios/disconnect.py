"""Disconnect: a session opened, used once and closed (``DELETE /v1/sessions/{id}``, 204), and
a provider connection disconnected.

The connection's browser route (``POST /oauth/{provider}/disconnect``) needs a connect link's
browser session; the scenario calls what that route calls, mcp_server's internal
``POST /internal/connect/github/disconnect``, with the internal assertion the gateway would
sign. Before each disconnect the runner connects the user's GitHub account afresh (untimed:
:mod:`.grants`) with a token the GitHub stand-in knows, so every disconnect revokes a real grant
there and must answer ``{"deleted": true, "revoked": true}``.
"""

from __future__ import annotations

import os
import uuid

from locust import tag, task

from loadtests.scenarios import mcp
from loadtests.scenarios.common import GatehouseUser, expect_status
from loadtests.scenarios.tools import TEXT, echoed


def close_session(user: GatehouseUser) -> None:
    prefix = f"{user.scenario}: "
    with user.client.post("/v1/sessions", json={"name": "load"}, headers=user.bearer(),
                          catch_response=True, name=prefix + "open session") as created:
        if created.status_code != 201:
            created.failure(f"HTTP {created.status_code}: {created.text[:200]}")
            return
        session_id = created.json()["id"]
    mcp.call_tool(user, mcp.CURRENT, "echo", {"text": TEXT}, echoed, path=f"/mcp/{session_id}")
    with user.client.delete(f"/v1/sessions/{session_id}", headers=user.bearer(),
                            catch_response=True, name=prefix + "close session") as closed:
        expect_status(closed, 204)


def disconnect_connection(user: GatehouseUser) -> None:
    user.connect_grant("disconnect")
    url = os.environ["LOADTEST_MCP_SERVER_URL"] + "/internal/connect/github/disconnect"
    headers = {"Authorization": "Bearer " + user.assertion(), "Accept": "application/json",
               "X-Request-Id": uuid.uuid4().hex}
    with user.client.post(url, headers=headers, catch_response=True,
                          name=f"{user.scenario}: disconnect github") as response:
        if response.status_code != 200:
            response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        outcome = response.json()
        if outcome.get("deleted") is True and outcome.get("revoked") is True:
            response.success()
        else:
            response.failure(f"disconnect answered {outcome}")


class DisconnectUser(GatehouseUser):
    scenario = "disconnect"

    @tag("disconnect")
    @task(2)
    def session(self) -> None:
        close_session(self)

    @tag("disconnect")
    @task(1)
    def connection(self) -> None:
        disconnect_connection(self)
