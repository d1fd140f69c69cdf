"""The Grafana dashboard's queries work against real metrics: a real Prometheus (Debian's
``/usr/bin/prometheus``, loopback, 1 s scrapes) scrapes the test stack's gateway and mcp_server
while a little traffic runs (echo, a GitHub tool against the loopback stand-in with a token due
for refresh, a tool the user has not connected, a rejected token, a session created and
closed); then every panel's every query, dashboard variables substituted, must return at least
one series through Prometheus's HTTP API (issue 13 item 5)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastmcp import Client

from tests.support.github_grants import Env, connect, env_fixture
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port
from tests.support.tenants import new_user

DASHBOARD = Path(__file__).resolve().parent.parent / "docker/grafana/dashboards/gatehouse.json"
# What Grafana would put in place of each variable: every provider, a minute's window.
VARIABLES = {"$__rate_interval": "1m", "${provider}": ".*", "$provider": ".*"}
DEADLINE = 60.0


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            if panel["type"] != "row" for target in panel["targets"]]


def substituted(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


@pytest.fixture(scope="module")
def prometheus(gateway: Server, mcp_server: Server, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus")
    mcp_metrics = urlsplit(mcp_server.env["TEST_METRICS_URL"])
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in (("gateway", urlsplit(gateway.url).netloc),
                                ("mcp_server", mcp_metrics.netloc))
        ],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    with (work / "prometheus.log").open("wb") as log:
        process = subprocess.Popen([
            "/usr/bin/prometheus", f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        ], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), "Prometheus ready", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition: Any, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        time.sleep(0.2)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def drive_traffic(gateway: Server, env: Env, idp: OidcProvider) -> None:
    connected, stranger = await new_user(env.pool), await new_user(env.pool)
    await connect(env, connected, expires_in=timedelta(seconds=30))  # due for refresh
    for who in (connected, stranger):
        token = idp.access_token(who.org_id, who.user_id, ["member"])
        async with Client(gateway.url + "/mcp", auth=token) as client:
            await client.call_tool("echo", {"text": "dashboard"})
            await client.call_tool("github_whoami", {}, raise_on_error=False)
    token = idp.access_token(connected.org_id, connected.user_id, ["member"])
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(gateway.url + "/v1/sessions", json={"name": "dashboard"}, headers=auth)
    assert created.status_code == 201, created.text
    closed = httpx.delete(f"{gateway.url}/v1/sessions/{created.json()['id']}", headers=auth)
    assert closed.status_code in (200, 204), closed.text
    refused = httpx.get(gateway.url + "/v1/sessions", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401


env = env_fixture()


async def test_every_panel_query_returns_series(
    prometheus: str, gateway: Server, mcp_server: Server, env: Env, idp: OidcProvider
) -> None:
    wait_for(lambda: {r["metric"]["job"] for r in query(prometheus, "up == 1")}
             >= {"gateway", "mcp_server"}, "both processes scraped")
    await drive_traffic(gateway, env, idp)
    queries = panel_queries()
    assert len(queries) >= 25 and len({title for title, _ in queries}) >= 20

    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries
                if not query(prometheus, substituted(expr))]

    missing: list[str] = []

    def all_answer() -> bool:
        missing[:] = empty()
        return not missing

    try:
        wait_for(all_answer, "every panel query answering")
    except AssertionError as exc:
        raise AssertionError("queries with no series:\n" + "\n".join(missing)) from exc
    refreshed = query(prometheus, 'gatehouse_token_refreshes_total{provider="github",'
                                  'outcome="success"} > 0')
    assert refreshed, "the due token was refreshed, and Prometheus saw it"


def test_dashboard_is_provisionable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "gatehouse"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    for wanted in ("route", "MCP", "outcomes", "Providers", "Identity", "Redis", "Audit"):
        assert any(wanted in row for row in rows), wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(dashboard)))
    assert used - {"__rate_interval", "__all"} <= variables
    provisioning = DASHBOARD.parent.parent / "provisioning" / "dashboards" / "gatehouse.yaml"
    assert "/var/lib/grafana/dashboards" in provisioning.read_text()
