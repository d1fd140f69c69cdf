"""`gatehouse up` with no configuration: embedded PostgreSQL and Redis, a development issuer,
both processes, a real MCP client, a clean Ctrl-C, and a second start that reuses the data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from fastmcp import Client
from mcp_types import TextContent

from tests.support.processes import free_port

GATEHOUSE = [sys.executable, "-m", "gateway"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}


@contextmanager
def gatehouse_up(cwd: Path, gateway_port: int, mcp_port: int) -> Iterator[subprocess.Popen[str]]:
    log_path = cwd / "up.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    log = log_path.open("a")
    process = subprocess.Popen(
        [*GATEHOUSE, "up", "--gateway-port", str(gateway_port), "--mcp-port", str(mcp_port)],
        cwd=cwd, env=clean_env(), stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C to stop." not in log_path.read_text()[offset:]:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        log.close()


def token(cwd: Path, port: int, org: str, user: str) -> str:
    return subprocess.run(
        [*GATEHOUSE, "token", "--org", org, "--user", user,
         "--public-url", f"http://127.0.0.1:{port}"],
        cwd=cwd, env=clean_env(), capture_output=True, text=True, check=True,
    ).stdout.strip()


async def whoami(port: int, bearer: str) -> dict[str, object]:
    async with Client(f"http://127.0.0.1:{port}/mcp", auth=bearer) as client:
        result = await client.call_tool("whoami", {})
    content = result.content[0]
    assert isinstance(content, TextContent)
    data: dict[str, object] = json.loads(content.text)
    return data


async def test_up_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
    gateway_port, mcp_port = free_port(), free_port()
    with gatehouse_up(tmp_path, gateway_port, mcp_port) as up:
        banner = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{gateway_port}" in banner
        assert "gatehouse token --org acme --user alice" in banner
        me = await whoami(gateway_port, token(tmp_path, gateway_port, "acme", "alice"))
        assert (me["org_id"], me["user_id"]) == ("acme", "alice")
        ready = httpx.get(f"http://127.0.0.1:{gateway_port}/readyz").json()
        assert ready["status"] == "ready"
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
    log = (tmp_path / "up.log").read_text()
    assert "embedded PostgreSQL stopped" in log and "embedded Redis stopped" in log
    for port in (gateway_port, mcp_port):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            raise AssertionError(f"port {port} still answers after Ctrl-C")
        except httpx.ConnectError:
            pass

    # A second start reuses the cluster: the organisation provisioned above is still there.
    with gatehouse_up(tmp_path, gateway_port, mcp_port):
        second = (tmp_path / "up.log").read_text()[len(log):]
        assert "creating PostgreSQL cluster" not in second
        assert "applied migrations" not in second
        ready_line = [ln for ln in second.splitlines() if "embedded PostgreSQL ready" in ln][-1]
        conn = await asyncpg.connect(ready_line.rsplit(": ", 1)[1])
        try:
            assert await conn.fetchval("SELECT id FROM organizations") == "acme"
        finally:
            await conn.close()
