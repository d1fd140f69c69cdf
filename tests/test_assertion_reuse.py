"""The internal assertion is reused per identity and remembered once verified (issue 14), without
loosening what it vouches for: each identity gets its own, none outlives its lifetime, a
remembered one still expires, and the request id travels in a header."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oauth.assertion import AssertionSigner, AssertionVerifier, CallerIdentity
from oauth.errors import AssertionRejected
from oauth.keys import load_private_key
from tests.support.processes import Server

ALICE = CallerIdentity("acme", "alice", "req-00000001", roles=("member",),
                       session_id=str(uuid.uuid4()), allowed_tools=("echo",))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_one_assertion_per_identity_not_per_request(key: Ed25519PrivateKey) -> None:
    signer = AssertionSigner(key, lifetime=30)
    first = signer.sign(ALICE)
    assert signer.sign(replace(ALICE, request_id="req-00000002", traceparent="00-x")) == first
    for other in (replace(ALICE, org_id="globex"), replace(ALICE, user_id="bob"),
                  replace(ALICE, roles=("admin",)), replace(ALICE, session_id=None),
                  replace(ALICE, allowed_tools=None), replace(ALICE, allowed_tools=("x",))):
        assert signer.sign(other) != first, other


def test_assertion_binds_identity_and_never_request_details(key: Ed25519PrivateKey) -> None:
    token = AssertionSigner(key, lifetime=30).sign(replace(ALICE, traceparent="00-ab-cd-01"))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["org"], claims["sub"], claims["roles"], claims["sid"], claims["tools"]) == (
        "acme", "alice", ["member"], ALICE.session_id, ["echo"])
    assert claims["exp"] - claims["iat"] == 30
    assert "rid" not in claims and "traceparent" not in claims


def test_reuse_stops_while_a_third_of_the_lifetime_remains(key: Ed25519PrivateKey) -> None:
    signer = AssertionSigner(key, lifetime=3)  # reused for 2 s, then a fresh one
    first = signer.sign(ALICE)
    deadline = time.monotonic() + 5
    while signer.sign(ALICE) == first:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    issued = jwt.decode(first, options={"verify_signature": False})["iat"]
    assert time.time() - issued < 3  # replaced before it expired


def test_verifier_remembers_yet_expires_and_takes_the_header_request_id(
        key: Ed25519PrivateKey) -> None:
    verifier = AssertionVerifier(key.public_key())
    token = AssertionSigner(key, lifetime=30).sign(ALICE)
    now = time.time()
    caller = verifier.verify(token, now=now, request_id="req-from-header")
    assert (caller.org_id, caller.user_id, caller.roles, caller.session_id,
            caller.allowed_tools, caller.request_id) == (
        "acme", "alice", ("member",), ALICE.session_id, ("echo",), "req-from-header")
    assert verifier.verify(token, now=now + 1, request_id="req-2").request_id == "req-2"
    with pytest.raises(AssertionRejected):  # remembered, but past exp + skew
        verifier.verify(token, now=now + 40)


def test_a_remembered_assertion_vouches_for_no_altered_token(key: Ed25519PrivateKey) -> None:
    verifier = AssertionVerifier(key.public_key())
    token = AssertionSigner(key, lifetime=30).sign(ALICE)
    verifier.verify(token)
    head, _payload, signature = token.split(".")
    forged = jwt.encode({**jwt.decode(token, options={"verify_signature": False}),
                         "org": "globex"}, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                        headers=jwt.get_unverified_header(token))
    with pytest.raises(AssertionRejected):
        verifier.verify(forged)
    with pytest.raises(AssertionRejected):  # the remembered signature on another payload
        verifier.verify(".".join((head, forged.split(".")[1], signature)))


def test_verifier_cache_is_bounded(key: Ed25519PrivateKey) -> None:
    verifier = AssertionVerifier(key.public_key(), remember=2)
    signer = AssertionSigner(key, lifetime=30)
    for n in range(5):
        verifier.verify(signer.sign(replace(ALICE, user_id=f"user-{n}")))
    assert len(verifier._verified) == 2


def test_whoami_reports_the_request_id_the_gateway_sent(
        mcp_server: Server, internal_keys: object) -> None:
    private = load_private_key(Path(internal_keys.private).read_bytes())  # type: ignore[attr-defined]
    token = AssertionSigner(private).sign(replace(ALICE, allowed_tools=None))
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "whoami", "arguments": {}}}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
               "Accept": "application/json, text/event-stream"}
    seen = []
    for request_id in ("req-aaaaaaaa", "req-bbbbbbbb"):  # one assertion, two requests
        resp = httpx.post(mcp_server.url + "/mcp", json=call, timeout=10,
                          headers={**headers, "X-Request-Id": request_id})
        assert resp.status_code == 200, resp.text
        seen.append(request_id in resp.text)
    assert seen == [True, True]
