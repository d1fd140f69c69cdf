"""No input gets a 5xx (SECURITY.md 55; issue 10 item 2): what a fault-and-fuzz probe sent.

First the probe's findings through an ordinary client (deep JSON, non-finite numbers, empty and
non-JSON bodies, huge and countless headers), each with the answer it must get; then a corpus
of malformed requests written byte by byte on plain sockets, where every answer must be a
complete response below 500, and the connection may close without one only where the body
exceeds the limit or never arrives.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.app import API
from gateway.jsonbody import MAX_DEPTH
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server

MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}
DEEP = 10_000
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]


def deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.fixture(scope="module")
def owner(idp: OidcProvider) -> dict[str, str]:
    """An owner of an organisation of its own: every endpoint is reachable, bodies are read."""
    token = idp.access_token(f"malformed-{uuid.uuid4().hex[:8]}", "mallory", ["owner"])
    return {"Authorization": f"Bearer {token}"}


def post_mcp(gateway: Server, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(gateway.url + "/mcp", content=body, headers={**MCP_HEADERS, **headers},
                      timeout=10)


def v1(gateway: Server, headers: dict[str, str], method: str, path: str, body: bytes,
       content_type: str = "application/json") -> httpx.Response:
    return httpx.request(method, gateway.url + path, content=body, timeout=10,
                         headers={**headers, "Content-Type": content_type})


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = resp.json()
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["request_id"] == resp.headers["x-request-id"]
    return problem


def assert_body_refused(resp: httpx.Response, words: str) -> None:
    problem = assert_problem(resp, 422, "validation_failed")
    assert problem["title"] == "Invalid input"
    assert problem["errors"][0]["loc"][0] == "body"
    assert words in json.dumps(problem["errors"]), problem


def create_session(gateway: Server, headers: dict[str, str]) -> str:
    resp = v1(gateway, headers, "POST", "/v1/sessions", b'{"name": "target"}')
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


# --- deep JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [deep_array(DEEP), deep_object(DEEP),
                                  b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":'
                                  + deep_array(DEEP) + b"}}"], ids=["array", "object", "params"])
def test_deep_json_on_mcp_is_a_parse_error_naming_the_limit(
    gateway: Server, owner: dict[str, str], body: bytes
) -> None:
    resp = post_mcp(gateway, owner, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == -32700
    assert f"deeper than {MAX_DEPTH}" in error["message"]


def test_json_at_the_depth_limit_still_reaches_mcp_server(
    gateway: Server, owner: dict[str, str]
) -> None:
    nested = deep_object(MAX_DEPTH - 3)  # inside the message object and its params
    body = b'{"jsonrpc":"2.0","id":7,"method":"ping","params":{"_meta":' + nested + b"}}"
    resp = post_mcp(gateway, owner, body)
    assert resp.status_code == 200, resp.text
    assert '"id":7' in resp.text.replace(" ", "")


@pytest.mark.parametrize("body", [deep_array(DEEP), deep_object(DEEP),
                                  b'{"variables": {"a": ' + deep_array(MAX_DEPTH) + b"}}"],
                         ids=["array", "object", "variables"])
def test_deep_json_on_v1_is_422(gateway: Server, owner: dict[str, str], body: bytes) -> None:
    resp = v1(gateway, owner, "POST", "/v1/sessions", body)
    assert_body_refused(resp, f"deeper than {MAX_DEPTH}")


# --- non-finite numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize("field", ["variables", "metadata"])
def test_non_finite_numbers_in_a_new_session_are_422(
    gateway: Server, owner: dict[str, str], field: str, number: str
) -> None:
    body = f'{{"{field}": {{"x": [1, {number}]}}}}'.encode()
    assert_body_refused(v1(gateway, owner, "POST", "/v1/sessions", body), "finite")


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize("field", ["variables", "metadata"])
def test_non_finite_numbers_in_a_session_change_are_422(
    gateway: Server, owner: dict[str, str], field: str, number: str
) -> None:
    session = create_session(gateway, owner)
    body = f'{{"{field}": {{"x": {number}}}}}'.encode()
    resp = v1(gateway, owner, "PATCH", f"/v1/sessions/{session}", body)
    assert_body_refused(resp, "finite")
    kept = httpx.get(f"{gateway.url}/v1/sessions/{session}", headers=owner, timeout=10)
    assert kept.status_code == 200 and kept.json()[field] == {}


def test_finite_numbers_are_kept(gateway: Server, owner: dict[str, str]) -> None:
    body = b'{"variables": {"big": 1e308, "small": -2.5e-300, "int": 12345678901234567890}}'
    resp = v1(gateway, owner, "POST", "/v1/sessions", body)
    assert resp.status_code == 201, resp.text
    assert float(resp.json()["variables"]["big"]) == 1e308


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e999"])
def test_non_finite_numbers_on_mcp_are_a_parse_error(
    gateway: Server, owner: dict[str, str], number: str
) -> None:
    body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
            f'"arguments":{{"text":"x","n":{number}}}}}}}').encode()
    resp = post_mcp(gateway, owner, body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == -32700
    assert "finite" in resp.json()["error"]["message"]


def test_a_data_exception_from_postgresql_is_422(gateway: Server, owner: dict[str, str]) -> None:
    """A value pydantic lets through but the database cannot take (an int beyond int4 here,
    refused by asyncpg with SQLSTATE 22000) is the caller's error, not a 500."""
    resp = v1(gateway, owner, "POST", "/v1/prompts/user/rollback", b'{"version": 99999999999}')
    assert_problem(resp, 422, "validation_failed")


# --- empty and non-JSON bodies -----------------------------------------------------------------

BODY_ENDPOINTS = [e for e in API if e.body is not None]


def _concrete(path: str, session: str) -> str:
    return (path.replace("{session_id}", session).replace("{layer}", "user")
            .replace("{user_id}", "mallory"))


@pytest.mark.parametrize("body", [b"", b"   ", b"not json", b"\xff\xfe{}", b'{"a": 1',
                                  b"NaN", b"{\"name\": \"a\x00b\"}"],
                         ids=["empty", "blank", "text", "utf16-bom", "truncated", "nan", "raw-nul"])
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
def test_every_body_endpoint_refuses_a_body_that_is_not_json(
    gateway: Server, owner: dict[str, str], endpoint: Any, body: bytes
) -> None:
    path = _concrete(endpoint.path, create_session(gateway, owner)
                     if "{session_id}" in endpoint.path else "x")
    resp = v1(gateway, owner, endpoint.method, path, body)
    assert_problem(resp, 422, "validation_failed")
    assert resp.json()["errors"][0]["loc"][0] == "body"


def test_an_empty_body_creates_no_session(gateway: Server, idp: OidcProvider) -> None:
    headers = {"Authorization": "Bearer " + idp.access_token(
        f"empty-{uuid.uuid4().hex[:8]}", "erin", ["member"])}
    assert_problem(v1(gateway, headers, "POST", "/v1/sessions", b""), 422, "validation_failed")
    listed = httpx.get(gateway.url + "/v1/sessions", headers=headers, timeout=10)
    assert listed.status_code == 200 and listed.json()["items"] == []


def test_wrong_content_type_and_oversized_body_have_matching_titles(
    gateway: Server, owner: dict[str, str]
) -> None:
    unsupported = v1(gateway, owner, "POST", "/v1/sessions", b"{}", content_type="text/plain")
    assert assert_problem(unsupported, 415, "unsupported_media_type")["title"] == \
        "Unsupported media type"
    huge = b'{"name": "' + b"x" * 300_000 + b'"}'
    too_large = v1(gateway, owner, "POST", "/v1/sessions", huge)
    assert assert_problem(too_large, 413, "payload_too_large")["title"] == "Content too large"


# --- one loc convention ------------------------------------------------------------------------


def _locs(resp: httpx.Response) -> list[list[str | int]]:
    return [error["loc"] for error in assert_problem(resp, 422, resp.json()["code"])["errors"]]


def test_every_422_locates_its_errors_by_request_part_then_path(
    gateway: Server, owner: dict[str, str]
) -> None:
    """Issue 12 item 5: one ``loc`` convention, FastAPI's: body, query or header first."""
    fields = v1(gateway, owner, "POST", "/v1/sessions",
                b'{"name": 1, "allowed_tools": ["echo", ""], "surprise": true}')
    assert sorted(_locs(fields), key=str) == [
        ["body", "allowed_tools", 1], ["body", "name"], ["body", "surprise"]]
    assert _locs(v1(gateway, owner, "POST", "/v1/sessions", b"{")) == [["body"]]
    assert _locs(v1(gateway, owner, "POST", "/v1/sessions", b'{"prompt": "{{"}')) == [
        ["body", "prompt"]]
    query = httpx.get(gateway.url + "/v1/sessions?limit=0&bogus=1", headers=owner, timeout=10)
    assert sorted(_locs(query), key=str) == [["query", "bogus"], ["query", "limit"]]
    key = {**owner, "Idempotency-Key": uuid.uuid4().hex}
    assert v1(gateway, key, "POST", "/v1/sessions", b'{"name": "a"}').status_code == 201
    reused = v1(gateway, key, "POST", "/v1/sessions", b'{"name": "b"}')
    assert reused.json()["code"] == "idempotency_key_reused"
    assert _locs(reused) == [["header", "idempotency-key"]]


# --- permission before the body ----------------------------------------------------------------


@pytest.mark.parametrize(("roles", "method", "path"), [
    (["member"], "PUT", "/v1/prompts/organization"),
    (["member"], "POST", "/v1/prompts/organization/rollback"),
    (["admin"], "PUT", "/v1/prompts/global"),
    (["viewer"], "PUT", "/v1/prompts/user"),
    (["viewer"], "POST", "/v1/sessions"),
    (["member"], "PUT", "/v1/members/someone/roles"),
])
@pytest.mark.parametrize("body", [b"", b"{not json", b'{"unexpected": 1}'],
                         ids=["empty", "not-json", "wrong-shape"])
def test_permission_is_checked_before_the_body(
    gateway: Server, idp: OidcProvider, roles: list[str], method: str, path: str, body: bytes
) -> None:
    """Issue 12 item 5: a caller who may not write hears 403, not what their body lacks."""
    user = f"pat-{roles[0]}"  # roles are kept from the first sight of a user
    headers = {"Authorization": "Bearer " + idp.access_token("permission-org", user, roles)}
    assert_problem(v1(gateway, headers, method, path, body), 403, "insufficient_scope")


def test_an_unknown_prompt_layer_is_404_whatever_the_body(
    gateway: Server, owner: dict[str, str]
) -> None:
    assert_problem(v1(gateway, owner, "PUT", "/v1/prompts/nope", b"{"), 404, "not_found")


# --- headers -----------------------------------------------------------------------------------


def test_a_one_megabyte_header_is_431(gateway: Server) -> None:
    resp = httpx.get(gateway.url + "/healthz", headers={"X-Big": "a" * 1_000_000}, timeout=10)
    problem = assert_problem(resp, 431, "request_headers_too_large")
    assert problem["title"] == "Request header fields too large"


def test_five_thousand_headers_are_431(gateway: Server) -> None:
    headers = [(f"X-H{i}", "v") for i in range(5000)]
    resp = httpx.get(gateway.url + "/healthz", headers=headers, timeout=10)
    assert_problem(resp, 431, "request_headers_too_large")


def test_headers_within_the_bounds_pass(gateway: Server) -> None:
    headers = [(f"X-H{i}", "v" * 200) for i in range(150)]
    assert httpx.get(gateway.url + "/healthz", headers=headers, timeout=10).status_code == 200


# --- the router's own refusals ------------------------------------------------------------------


def test_router_404_and_405_are_problems_with_request_id(gateway: Server) -> None:
    missing = httpx.get(gateway.url + "/no/such/path", timeout=10)
    assert assert_problem(missing, 404, "not_found")["title"] == "Not found"
    wrong = httpx.request("PATCH", gateway.url + "/healthz", timeout=10)
    assert assert_problem(wrong, 405, "method_not_allowed")["title"] == "Method not allowed"
    assert wrong.headers["allow"]


@pytest.mark.parametrize("path", ["/mcp", "/mcp/00000000-0000-0000-0000-000000000000"])
def test_get_on_mcp_is_a_405_problem_allowing_post(
    gateway: Server, owner: dict[str, str], path: str
) -> None:
    """Issue 12 item 5: mcp_server is stateless, so no GET stream is ever served; the refusal
    is ours, a problem document with request_id, not mcp_server's text/plain."""
    resp = httpx.get(gateway.url + path, timeout=10,
                     headers={**owner, "Accept": "text/event-stream"})
    assert assert_problem(resp, 405, "method_not_allowed")["title"] == "Method not allowed"
    assert resp.headers["allow"] == "POST"


# --- raw sockets -------------------------------------------------------------------------------

READ_DEADLINE = 5.0


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the connection closed without a status line
    raw: bytes


def _complete(data: bytes) -> bool:
    while data.startswith(b"HTTP/1.1 1"):  # interim answers (100 Continue) precede the final one
        data = data.partition(b"\r\n\r\n")[2]
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    lines = head.lower().split(b"\r\n")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
        if name.strip() == b"transfer-encoding" and b"chunked" in value:
            return body.endswith(b"0\r\n\r\n")
    return False


def exchange(gateway: Server, raw: bytes, *, half_close: bool = False) -> Answer:
    """Send ``raw`` as is and read one response, or until the server closes or the deadline."""
    port = int(gateway.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + READ_DEADLINE
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse before it has read everything; read what it said
        while not _complete(data):
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(
                    f"no complete answer within {READ_DEADLINE}s: {data[:200]!r}") from None
            except OSError:
                break  # reset by the server
            if not chunk:
                break
            data += chunk
    while data.startswith(b"HTTP/1.1 1"):
        data = data.partition(b"\r\n\r\n")[2]
    status = None
    if data.startswith(b"HTTP/1.1 ") or data.startswith(b"HTTP/1.0 "):
        status = int(data[9:12])
    return Answer(status, data)


def request(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
            *, length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             *(f"{k}: {v}" for k, v in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Case:
    name: str
    build: Any  # (token) -> bytes
    may_close: bool = False  # the body exceeds the limit or never arrives
    half_close: bool = False


def _json_to(path: str, body: bytes, content_type: str = "application/json") -> Any:
    def build(token: str) -> bytes:
        return request("POST", path, [("Authorization", f"Bearer {token}"),
                                      ("Content-Type", content_type),
                                      ("Accept", "application/json, text/event-stream")], body)
    return build


def _raw(data: bytes) -> Any:
    return lambda token: data


def _headers(*extra: str, path: str = "/healthz") -> Any:
    def build(token: str) -> bytes:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *extra]
        return "\r\n".join(lines).encode() + b"\r\n\r\n"
    return build


def _authorised(method: str, path: str, extra: bytes, body: bytes) -> Any:
    def build(token: str) -> bytes:
        return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                "Accept: application/json, text/event-stream\r\n").encode() + extra + b"\r\n" + body
    return build


RPC = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'

CORPUS = [
    # request lines
    Case("garbage-line", _raw(b"GARBAGE\r\n\r\n")),
    Case("method-only", _raw(b"GET\r\n\r\n")),
    Case("http-9.9", _raw(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")),
    Case("extra-token", _raw(b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n")),
    Case("space-in-path", _raw(b"GET /heal thz HTTP/1.1\r\nHost: x\r\n\r\n")),
    Case("nul-in-path", _raw(b"GET /mcp\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")),
    Case("unknown-method", _authorised("BREW", "/mcp", b"Content-Length: 0\r\n", b"")),
    Case("absolute-uri", _raw(b"GET http://evil.example/healthz HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")),
    Case("long-path", _raw(b"GET /" + b"a" * 60_000 + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n")),
    Case("http-1.0-no-host", _raw(b"GET /healthz HTTP/1.0\r\n\r\n")),
    Case("lf-only", _raw(b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n")),
    # headers
    Case("header-without-colon", _headers("NoColonHere")),
    Case("nul-in-header", _headers("X-A: a\x00b")),
    Case("obs-fold", _headers("X-A: a", " folded")),
    Case("non-ascii-header", _raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  b"X-A: \xff\xfe\r\n\r\n")),
    Case("one-megabyte-header", _headers("X-Big: " + "a" * 1_000_000)),
    Case("5000-headers", _headers(*(f"X-H{i}: v" for i in range(5000)))),
    Case("huge-authorization", _headers("Authorization: Bearer " + "a" * 100_000, path="/mcp")),
    Case("two-authorizations", lambda t: request(
        "POST", "/mcp", [("Authorization", f"Bearer {t}"), ("Authorization", "Bearer junk"),
                         ("Content-Type", "application/json"),
                         ("Accept", "application/json, text/event-stream")], RPC)),
    Case("two-content-types", lambda t: request(
        "POST", "/v1/sessions", [("Authorization", f"Bearer {t}"),
                                 ("Content-Type", "text/plain"),
                                 ("Content-Type", "application/json")], b"{}")),
    Case("two-hosts", _headers("Host: other")),
    # lengths and framing
    Case("content-length-text", _authorised("POST", "/mcp", b"Content-Length: abc\r\n", RPC)),
    Case("content-length-negative", _authorised("POST", "/mcp", b"Content-Length: -1\r\n", RPC)),
    Case("content-length-twice", _authorised(
        "POST", "/mcp", b"Content-Length: 5\r\nContent-Length: 6\r\n", b"123456")),
    Case("content-length-and-chunked", _authorised(
        "POST", "/mcp", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\n")),
    Case("chunked-garbage", _authorised(
        "POST", "/mcp", b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n")),
    Case("chunked-valid", _authorised(
        "POST", "/mcp", b"Transfer-Encoding: chunked\r\n",
        f"{len(RPC):x}\r\n".encode() + RPC + b"\r\n0\r\n\r\n")),
    Case("chunked-truncated", _authorised(
        "POST", "/mcp", b"Transfer-Encoding: chunked\r\n", b"400\r\n{\"jsonrpc\""),
         may_close=True, half_close=True),
    Case("truncated-body", _authorised("POST", "/mcp", b"Content-Length: 500\r\n", RPC),
         may_close=True, half_close=True),
    Case("v1-truncated-body", _authorised("POST", "/v1/sessions", b"Content-Length: 500\r\n",
                                          b'{"name":'), may_close=True, half_close=True),
    Case("v1-huge-content-length", _authorised(
        "POST", "/v1/sessions", b"Content-Length: 99999999999\r\n", b"{}"), may_close=True),
    Case("mcp-body-over-limit", _json_to("/mcp", b'{"x":"' + b"a" * 1_200_000 + b'"}'),
         may_close=True),
    Case("pipelined-garbage", lambda t: request("GET", "/healthz", []).replace(
        b"Connection: close\r\n", b"") + b"GARBAGE\r\n\r\n"),
    Case("expect-100", _authorised("POST", "/mcp", b"Expect: 100-continue\r\n"
                                   + f"Content-Length: {len(RPC)}\r\n".encode(), RPC)),
    # bodies
    Case("wrong-content-type-mcp", _json_to("/mcp", RPC, "text/plain")),
    Case("form-content-type-v1", _json_to("/v1/sessions", b"name=x",
                                          "application/x-www-form-urlencoded")),
    Case("no-content-type-v1", lambda t: request(
        "POST", "/v1/sessions", [("Authorization", f"Bearer {t}")], b"{}")),
    Case("invalid-utf8-mcp", _json_to("/mcp", b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}')),
    Case("invalid-utf8-v1", _json_to("/v1/sessions", b'{"name":"\xc3\x28"}')),
    Case("raw-nul-mcp", _json_to("/mcp", b'{"jsonrpc":"2.0","id":1,"method":"a\x00b"}')),
    Case("escaped-nul-v1", _json_to("/v1/sessions", b'{"name":"a\\u0000b"}')),
    Case("lone-surrogate-v1", _json_to("/v1/sessions", b'{"variables":{"k":"\\ud800"}}')),
    Case("nul-key-v1", _json_to("/v1/sessions", b'{"metadata":{"\\u0000":1}}')),
    Case("deep-array-mcp", _json_to("/mcp", deep_array(DEEP))),
    Case("deep-object-mcp", _json_to("/mcp", deep_object(DEEP))),
    Case("deep-array-v1", _json_to("/v1/sessions", deep_array(DEEP))),
    Case("deep-object-v1", _json_to("/v1/sessions", deep_object(DEEP))),
    Case("unclosed-brackets-mcp", _json_to("/mcp", b"[" * 100_000)),
    Case("non-json-mcp", _json_to("/mcp", b"hello")),
    Case("non-json-v1", _json_to("/v1/sessions", b"hello")),
    Case("nan-mcp", _json_to("/mcp", b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}')),
    Case("nan-v1", _json_to("/v1/sessions", b'{"variables":{"x":NaN}}')),
    Case("infinity-v1", _json_to("/v1/sessions", b'{"metadata":{"x":-Infinity}}')),
    Case("overflow-v1", _json_to("/v1/sessions", b'{"metadata":{"x":1e999}}')),
    Case("huge-int-v1", _json_to("/v1/sessions", b'{"ttl_seconds":' + b"9" * 5000 + b"}")),
    Case("huge-int-mcp", _json_to("/mcp", b'{"jsonrpc":"2.0","id":' + b"9" * 5000
                                  + b',"method":"ping"}')),
    Case("empty-mcp", _json_to("/mcp", b"")),
    Case("empty-v1", _json_to("/v1/sessions", b"")),
    Case("batch-of-garbage", _json_to("/mcp", b'[1, "x", null, {}, [], {"jsonrpc": "2.0"}]')),
    Case("batch-of-requests", _json_to("/mcp", b"[" + RPC + b"," + RPC + b"]")),
    Case("rpc-scalar", _json_to("/mcp", b"42")),
    Case("rpc-wrong-types", _json_to(
        "/mcp", b'{"jsonrpc":2,"id":[1],"method":{"a":1},"params":"x"}')),
    Case("tools-call-garbage-params", _json_to(
        "/mcp", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7,'
        b'"arguments":"nope"}}')),
    Case("v1-array-body", _json_to("/v1/sessions", b"[]")),
    Case("v1-wrong-types", _json_to("/v1/sessions", b'{"name":1,"allowed_tools":"x",'
                                    b'"variables":[],"ttl_seconds":"soon"}')),
    Case("v1-unknown-session-patch", lambda t: request(
        "PATCH", "/v1/sessions/not-a-uuid", [("Authorization", f"Bearer {t}"),
                                             ("Content-Type", "application/json")], b"{}")),
    Case("v1-rollback-out-of-range", _json_to("/v1/prompts/user/rollback",
                                              b'{"version": 99999999999}')),
]


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_raw_malformed_request_gets_a_complete_answer_below_500(
    gateway: Server, owner: dict[str, str], case: Case
) -> None:
    token = owner["Authorization"].removeprefix("Bearer ")
    answer = exchange(gateway, case.build(token), half_close=case.half_close)
    if answer.status is None:
        assert case.may_close, f"{case.name}: closed without an answer: {answer.raw[:200]!r}"
    else:
        assert 200 <= answer.status < 500, f"{case.name}: {answer.raw[:400]!r}"
    assert b"Traceback" not in answer.raw


def test_the_corpus_leaves_no_error_in_the_log_and_the_gateway_serving(
    gateway: Server, owner: dict[str, str]
) -> None:
    seen = len(gateway.log_text())
    for case in CORPUS:
        exchange(gateway, case.build(owner["Authorization"].removeprefix("Bearer ")),
                 half_close=case.half_close)
    assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
    log = gateway.log_text()[seen:]
    assert "Traceback" not in log and "unhandled error" not in log, log
