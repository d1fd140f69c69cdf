"""Small truths of what mcp_server tells clients (issue 12.4, 12.6): only enabled providers'
tools are offered, every description is plain text, ``serverInfo`` names Gatehouse and its
version, and a normal "not connected" answer is not logged as an error."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastmcp import Client as FastMcpClient
from starlette.testclient import TestClient

from mcp_server.app import build_mcp
from mcp_server.auth import AssertionMiddleware
from mcp_server.settings import McpServerSettings
from oauth.assertion import AssertionSigner, AssertionVerifier, CallerIdentity
from oauth.catalogue import load_catalogue
from oauth.keyring import generate_entry
from tests.support.databases import Database
from tests.support.processes import Server, free_port
from tests.test_mcp_clients import sdk_client

ALWAYS = {"echo", "whoami", "count"}
# reStructuredText that must not reach a model: roles (:func:`x`, :class:`~a.B`), inline
# literals (``x``) and directives (.. note::).
RST = re.compile(r":[a-z]+(:[a-z]+)?:`|``|^\s*\.\. [a-z-]+::", re.MULTILINE)


@contextmanager
def in_process(settings: McpServerSettings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """mcp_server in this process (lifespan and all), and headers carrying an assertion."""
    key = Ed25519PrivateKey.generate()
    app = AssertionMiddleware(build_mcp(settings).http_app(path="/mcp", stateless_http=True),
                              AssertionVerifier(key.public_key()))
    caller = CallerIdentity("acme", f"truth-{uuid.uuid4().hex[:8]}", "req-1")
    headers = {"Authorization": "Bearer " + AssertionSigner(key).sign(caller),
               "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
    with TestClient(app) as client:
        yield client, headers


def rpc(client: TestClient, headers: dict[str, str], method: str,
        params: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    response = client.post("/mcp", content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text
    data = next(line[5:] for line in response.text.splitlines() if line.startswith("data:"))
    answer: dict[str, Any] = json.loads(data)
    return answer


def listed(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in rpc(client, headers, "tools/list")["result"]["tools"]}


def settings_with(work_dir: Path, database: Database | None, redis_url: str | None,
                  providers: dict[str, Any]) -> McpServerSettings:
    vault: dict[str, Any] = {} if database is None else {
        "database_url": database.app_url, "redis_url": redis_url,
        "token_keys": generate_entry("truths"),
        "resilience_namespace": f"truths-{uuid.uuid4().hex[:8]}"}
    return McpServerSettings(internal_public_key_file=work_dir / "unused.pub",
                             public_url="https://gatehouse.test", providers=providers, **vault)


def client_config(**extra: str) -> dict[str, str]:
    return {"client_id": "gatehouse-test", "client_secret": "test-secret", **extra}


# -- only usable tools are offered (12.4) --------------------------------------------------------


def test_only_enabled_providers_tools_are_listed_and_others_are_unknown(
    work_dir: Path, database: Database, redis_url: str
) -> None:
    """GitHub is enabled; "corp" is configured but its discovery fails, so it is left out."""
    unreachable = f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration"
    providers = {"github": client_config(),
                 "corp": client_config(discovery_url=unreachable)}
    settings = settings_with(work_dir, database, redis_url, providers)
    with in_process(settings) as (client, headers):
        names = set(listed(client, headers))
        for tool in ("corp_whoami", "google_list_calendar_events", "microsoft_whoami"):
            answer = rpc(client, headers, "tools/call", {"name": tool, "arguments": {}})
            assert answer["result"]["isError"] is True
            assert answer["result"]["content"][0]["text"] == f"Unknown tool: {tool!r}"
    assert names == ALWAYS | {"github_whoami", "github_list_repositories",
                              "github_search_issues", "github_create_issue",
                              "github_get_file_contents"}


def test_without_a_vault_no_provider_is_enabled(work_dir: Path) -> None:
    """Configured providers but no database/Redis/keys: their tools could only fail."""
    settings = settings_with(work_dir, None, None, {"github": client_config()})
    with in_process(settings) as (client, headers):
        assert set(listed(client, headers)) == ALWAYS
        answer = rpc(client, headers, "tools/call", {"name": "github_whoami", "arguments": {}})
    assert answer["result"]["content"][0]["text"] == "Unknown tool: 'github_whoami'"


# -- descriptions are plain text (12.6) ---------------------------------------------------------


def descriptions(tool: dict[str, Any]) -> list[str]:
    """The tool's description and every description inside its input schema."""
    found = [tool.get("description") or ""]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend(v for k, v in node.items() if k == "description" and isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tool.get("inputSchema"))
    return found


def test_the_rst_pattern_catches_what_it_must() -> None:
    for text in ("Return ``text`` unchanged", "see :func:`current_caller`",
                 "a :class:`~oauth.assertion.CallerIdentity`", ".. note:: careful"):
        assert RST.search(text), text
    assert not RST.search("Return `text` unchanged (GET /repos/{owner}/{repo}).")


def test_every_tool_description_is_plain_text(
    work_dir: Path, database: Database, redis_url: str
) -> None:
    """Every catalogue provider enabled, so every tool Gatehouse can offer is listed."""
    providers = {name: client_config() for name in load_catalogue()}
    with in_process(settings_with(work_dir, database, redis_url, providers)) as (client, headers):
        tools = listed(client, headers)
    assert {f"{name}_whoami" for name in providers} | ALWAYS <= set(tools)
    for name, tool in tools.items():
        assert tool.get("description"), f"{name} has no description"
        for text in descriptions(tool):
            assert not RST.search(text), f"{name}: {text!r}"


# -- serverInfo (12.6) --------------------------------------------------------------------------


# "legacy": initialize's serverInfo; "auto": server/discover, whose result carries serverInfo
# in _meta on 2026-07-28 (a client that adopts a version without discovering sees none).
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_server_info_names_gatehouse_and_its_version(
    gateway: Server, alice_token: str, mode: str
) -> None:
    async with FastMcpClient(gateway.url + "/mcp", auth=alice_token, mode=mode) as client:
        info, negotiated = client.server_info, client.protocol_version
    assert negotiated == {"legacy": "2025-11-25", "auto": "2026-07-28"}[mode]
    assert info is not None
    assert (info.name, info.version) == ("Gatehouse", version("gatehouse"))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_client_sees_the_same_server_info(
    gateway: Server, alice_token: str, mode: str
) -> None:
    async with sdk_client(gateway.url + "/mcp", alice_token, mode) as client:
        info = client.server_info
    assert info is not None
    assert (info.name, info.version) == ("Gatehouse", version("gatehouse"))


# -- "not connected" is an answer, not an error (12.6) ------------------------------------------


@contextmanager
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """Records of every logger, FastMCP's included (it does not propagate to the root)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("fastmcp")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def test_not_connected_is_answered_without_an_error_in_the_log(
    work_dir: Path, database: Database, redis_url: str
) -> None:
    settings = settings_with(work_dir, database, redis_url, {"github": client_config()})
    with in_process(settings) as (client, headers), every_log_record() as records:
        answer = rpc(client, headers, "tools/call", {"name": "github_whoami", "arguments": {}})
    text = answer["result"]["content"][0]["text"]
    assert answer["result"]["isError"] and "you have not connected GitHub" in text
    told = [r for r in records if "Error calling tool 'github_whoami'" in r.getMessage()]
    assert [r.levelno for r in told] == [logging.INFO]  # FastMCP's line, seen, not an error
    errors = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
    assert errors == []
