"""mcp_server admits only the gateway's internal assertion."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oauth.assertion import AUDIENCE, ISSUER, TOKEN_TYPE, AssertionSigner, CallerIdentity
from oauth.keys import load_private_key
from tests.support.processes import Server

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}}}


def call(server: Server, token: str | None) -> httpx.Response:
    headers = dict(HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(server.url + "/mcp", json=CALL, headers=headers, timeout=10)


def assertion(key: Ed25519PrivateKey, **overrides: object) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 30, "sub": "alice",
              "org": "acme", "rid": uuid.uuid4().hex, "jti": uuid.uuid4().hex, **overrides}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": TOKEN_TYPE})


@pytest.fixture(scope="module")
def gateway_key(internal_keys: object) -> Ed25519PrivateKey:
    return load_private_key(Path(internal_keys.private).read_bytes())  # type: ignore[attr-defined]


def test_valid_assertion_is_served(mcp_server: Server, gateway_key: Ed25519PrivateKey) -> None:
    token = AssertionSigner(gateway_key).sign(CallerIdentity("acme", "alice", "req-12345678"))
    resp = call(mcp_server, token)
    assert resp.status_code == 200 and '"text":"x"' in resp.text.replace(" ", "")


def test_no_assertion_is_401(mcp_server: Server) -> None:
    resp = call(mcp_server, None)
    assert resp.status_code == 401
    assert resp.json()["code"] == "invalid_assertion"


def test_expired_assertion_is_401(mcp_server: Server, gateway_key: Ed25519PrivateKey) -> None:
    past = int(time.time()) - 120
    assert call(mcp_server, assertion(gateway_key, iat=past, exp=past + 30)).status_code == 401


def test_overlong_assertion_is_401(mcp_server: Server, gateway_key: Ed25519PrivateKey) -> None:
    now = int(time.time())
    assert call(mcp_server, assertion(gateway_key, exp=now + 3600)).status_code == 401


def test_wrong_audience_is_401(mcp_server: Server, gateway_key: Ed25519PrivateKey) -> None:
    assert call(mcp_server, assertion(gateway_key, aud="someone-else")).status_code == 401


def test_assertion_from_another_key_is_401(mcp_server: Server) -> None:
    assert call(mcp_server, assertion(Ed25519PrivateKey.generate())).status_code == 401


def test_users_own_idp_token_is_401(mcp_server: Server, alice_token: str) -> None:
    assert call(mcp_server, alice_token).status_code == 401
