"""Log lines (issue 13.2): every line of both processes is one JSON object carrying the request's
context, and each request gets exactly one access line naming its route template."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.support.processes import Server

MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}
REQUIRED = ("time", "level", "logger", "message")
DEADLINE = 10.0


def lines(server: Server) -> list[dict[str, Any]]:
    """Every line of the server's log as JSON; fails on the first line that is not an object."""
    parsed = []
    for number, line in enumerate(server.log_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{server.log.name}:{number} is not JSON: {line!r}") from exc
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def access_lines(server: Server, logger: str, request_id: str) -> list[dict[str, Any]]:
    """The access lines of one request, once its line is written and a later request's too
    (lines of one process are written in order, so a duplicate would be in by then)."""
    deadline = time.monotonic() + DEADLINE
    while not _access(server, logger, request_id):
        assert time.monotonic() < deadline, server.log_text()[-4000:]
        time.sleep(0.02)
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    httpx.get(server.url + "/healthz", headers={"X-Request-Id": sentinel}, timeout=5)
    if logger == "gateway.access":  # mcp_server takes the request id from the assertion only
        while not _access(server, logger, sentinel):
            assert time.monotonic() < deadline, server.log_text()[-4000:]
            time.sleep(0.02)
    return _access(server, logger, request_id)


def _access(server: Server, logger: str, request_id: str) -> list[dict[str, Any]]:
    return [r for r in lines(server)
            if r["logger"] == logger and r.get("request_id") == request_id]


def assert_access(record: dict[str, Any], method: str, route: str, status: int) -> None:
    assert (record["method"], record["route"], record["status"]) == (method, route, status)
    assert record["message"] == f"{method} {route} {status}"
    assert isinstance(record["duration_ms"], float | int) and record["duration_ms"] >= 0
    assert isinstance(record["bytes"], int) and record["bytes"] > 0


def new_session(gateway: Server, bearer: str) -> str:
    resp = httpx.post(gateway.url + "/v1/sessions", json={"name": "logged"},
                      headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def test_every_line_of_both_processes_is_a_json_object_uvicorns_too(
    gateway: Server, mcp_server: Server, alice_token: str
) -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}}
    resp = httpx.post(gateway.url + "/mcp", json=call, timeout=10,
                      headers={**MCP_HEADERS, "Authorization": f"Bearer {alice_token}"})
    assert resp.status_code == 200, resp.text
    for server in (gateway, mcp_server):
        records = lines(server)
        for record in records:
            assert all(key in record for key in REQUIRED), record
            assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            assert datetime.fromisoformat(record["time"]).utcoffset() == UTC.utcoffset(None)
        messages = {(r["logger"], r["message"]) for r in records}
        assert ("uvicorn.error", "Application startup complete.") in messages
        # uvicorn was started without --no-access-log: its raw-path lines are switched off.
        assert not any(r["logger"] == "uvicorn.access" for r in records)
        assert not any("color_message" in r for r in records)


def test_a_tools_call_gets_one_access_line_in_each_process_with_its_context(
    gateway: Server, mcp_server: Server, alice_token: str
) -> None:
    session = new_session(gateway, alice_token)
    request_id = f"logs-{uuid.uuid4().hex}"
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hello"}}}
    resp = httpx.post(
        f"{gateway.url}/mcp/{session}", json=call, timeout=10,
        headers={**MCP_HEADERS, "Authorization": f"Bearer {alice_token}",
                 "X-Request-Id": request_id})
    assert resp.status_code == 200, resp.text

    (outer,) = access_lines(gateway, "gateway.access", request_id)
    assert_access(outer, "POST", "/mcp/{session_id}", 200)
    (inner,) = access_lines(mcp_server, "mcp_server.access", request_id)
    assert_access(inner, "POST", "/mcp", 200)
    for record in (outer, inner):
        assert (record["org_id"], record["user_id"]) == ("acme", "alice")
        assert record["session_id"] == session
        assert session not in record["message"]  # the template, never the raw path


def test_lines_logged_while_a_tool_runs_carry_the_requests_context(
    gateway: Server, mcp_server: Server, alice_token: str
) -> None:
    """FastMCP runs a stateless request's tools in a task of its own: the context still
    reaches them (through the request's scope)."""
    request_id = f"logs-{uuid.uuid4().hex}"
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "github_whoami", "arguments": {}}}  # not connected: a tool error
    resp = httpx.post(gateway.url + "/mcp", json=call, timeout=30, headers={
        **MCP_HEADERS, "Authorization": f"Bearer {alice_token}", "X-Request-Id": request_id})
    assert resp.status_code == 200 and '"isError":true' in resp.text, resp.text
    access_lines(mcp_server, "mcp_server.access", request_id)
    (tool,) = [r for r in lines(mcp_server) if r["message"] == "Error calling tool 'github_whoami'"
               and r.get("request_id") == request_id]
    assert (tool["org_id"], tool["user_id"]) == ("acme", "alice")


def test_a_v1_request_gets_one_access_line_with_its_route_template(
    gateway: Server, alice_token: str
) -> None:
    session = new_session(gateway, alice_token)
    request_id = f"logs-{uuid.uuid4().hex}"
    resp = httpx.get(f"{gateway.url}/v1/sessions/{session}", timeout=10, headers={
        "Authorization": f"Bearer {alice_token}", "X-Request-Id": request_id})
    assert resp.status_code == 200, resp.text
    (record,) = access_lines(gateway, "gateway.access", request_id)
    assert_access(record, "GET", "/v1/sessions/{session_id}", 200)
    assert record["bytes"] == len(resp.content)
    assert (record["org_id"], record["user_id"], record["session_id"]) == (
        "acme", "alice", session)


def test_a_request_refused_before_routing_still_names_its_route_and_no_identity(
    gateway: Server,
) -> None:
    request_id = f"logs-{uuid.uuid4().hex}"
    raw = f"/v1/sessions/{uuid.uuid4()}"
    resp = httpx.get(gateway.url + raw, headers={"X-Request-Id": request_id}, timeout=10)
    assert resp.status_code == 401
    (record,) = access_lines(gateway, "gateway.access", request_id)
    assert_access(record, "GET", "/v1/sessions/{session_id}", 401)
    assert "org_id" not in record and "user_id" not in record
    assert raw not in json.dumps(record)


SNIPPET = textwrap.dedent("""
    import logging, sys
    from telemetry.logs import configure
    configure(sys.argv[1], sys.argv[2], ["gatehouse_own"])
    logging.getLogger("gatehouse_own").debug("own debug")
    logging.getLogger("some.library").debug("library debug")
    logging.getLogger("some.library").info("library info", extra={"tool": "echo"})
    def fail(secret_local):
        raise ValueError("boom")
    try:
        fail("local-value-never-logged")
    except ValueError:
        logging.getLogger("gatehouse_own").exception("it failed")
    from opentelemetry.sdk.trace import TracerProvider
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        ids = span.get_span_context()
        logging.getLogger("gatehouse_own").info(
            "in a span %032x %016x", ids.trace_id, ids.span_id)
""")


def run_snippet(log_format: str, level: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SNIPPET, log_format, level],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stderr.splitlines()


def test_json_lines_carry_extra_fields_and_tracebacks_without_locals() -> None:
    output = run_snippet("json", "DEBUG")
    records = [json.loads(line) for line in output]
    by_message = {r["message"]: r for r in records}
    assert "own debug" in by_message and "library debug" not in by_message  # DEBUG: ours only
    assert by_message["library info"]["tool"] == "echo"
    failure = by_message["it failed"]
    assert failure["level"] == "ERROR" and "ValueError: boom" in failure["exception"]
    assert "local-value-never-logged" not in "\n".join(output)
    assert "trace_id" not in by_message["it failed"]  # no span, no ids
    (traced,) = [r for r in records if r["message"].startswith("in a span ")]
    assert traced["message"] == f"in a span {traced['trace_id']} {traced['span_id']}"


def test_console_lines_are_readable_text() -> None:
    output = run_snippet("console", "INFO")
    assert not any(line.startswith("{") for line in output), output
    assert any(line.endswith("ERROR   gatehouse_own [-] it failed")
               for line in output), output
    assert "own debug" not in "\n".join(output)
