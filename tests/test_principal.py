"""Claims to principal: configurable and nested claim names, refusal of unusable identities
(SECURITY 58, 61: the identifier rule and reserved names, also end to end through the gateway)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.errors import Unauthenticated
from gateway.principal import ClaimMapping
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server


def test_nested_claim_paths() -> None:
    mapping = ClaimMapping(org="app_metadata.org_id", user="sub", roles="app_metadata.roles")
    principal = mapping.principal(
        {"sub": "alice", "app_metadata": {"org_id": "acme", "roles": ["admin", "member"]},
         "scope": "mcp read"}
    )
    assert (principal.org_id, principal.user_id) == ("acme", "alice")
    assert principal.roles == ("admin", "member")
    assert principal.scopes == frozenset({"mcp", "read"})


def test_missing_roles_fall_back_to_defaults_and_strings_are_split() -> None:
    mapping = ClaimMapping(default_roles=("viewer",))
    assert mapping.principal({"sub": "a", "org_id": "o"}).roles == ("viewer",)
    assert mapping.principal({"sub": "a", "org_id": "o", "roles": "b a a"}).roles == ("a", "b")


@pytest.mark.parametrize(
    "claims",
    [{"sub": "a"}, {"sub": "a", "org_id": ""}, {"sub": "a", "org_id": 7},
     {"sub": "a", "org_id": "x" * 256}, {"sub": "a\u202e", "org_id": "o"},
     {"sub": "a", "org_id": "o\x00"}, {"sub": "a", "org_id": "o", "roles": [1]},
     {"sub": "a", "org_id": "o", "roles": ["r"] * 40}, {"sub": "a", "org_id": {"x": 1}}],
)
def test_unusable_identities_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated):
        ClaimMapping().principal(claims)


# Identifier rule (module docstring of gateway.principal; SECURITY 58, 61) ----------------------

_RFC6750_DESCRIPTION = frozenset(
    chr(c) for c in (0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)))
_UNPRINTABLE = "printable text without spaces"


@pytest.mark.parametrize("value", [
    "auth0|5f7c8ec7c33c6c004bbafe82", "alice@example.com", "urn:corp:eng", "corp:eng",
    "a/b.c-d_e", "x" * 255, "Zoë", "社員42", "a%3Ab", "carol_",
])
def test_real_issuers_ids_are_accepted(value: str) -> None:
    principal = ClaimMapping().principal({"sub": value, "org_id": value})
    assert (principal.org_id, principal.user_id) == (value, value)


@pytest.mark.parametrize(("value", "phrase"), [
    ("", "lacks a usable"),
    ("x" * 256, "longer than 255"),
    ("a b", _UNPRINTABLE), ("a\tb", _UNPRINTABLE), ("a\u00a0b", _UNPRINTABLE),
    ("a\u2028b", _UNPRINTABLE), ("a\u3000b", _UNPRINTABLE), ("a\x1fb", _UNPRINTABLE),
    ("a\x00", _UNPRINTABLE), ("a\u200bb", _UNPRINTABLE), ("a\u202eb", _UNPRINTABLE),
    ("a\U000e0041", _UNPRINTABLE), ("a\ud800", _UNPRINTABLE), ("a\ue000", _UNPRINTABLE),
    ("a\U0010fffe", _UNPRINTABLE),
    ("_platform", "reserved"), ("_gatehouse", "reserved"), ("_", "reserved"),
])
@pytest.mark.parametrize("claim", ["org_id", "sub"])
def test_ids_outside_the_rule_are_refused_with_the_rule_named(
    value: str, phrase: str, claim: str
) -> None:
    claims = {"sub": "alice", "org_id": "acme", claim: value}
    with pytest.raises(Unauthenticated) as refused:
        ClaimMapping().principal(claims)
    detail = refused.value.detail
    assert phrase in detail
    assert ("organisation" if claim == "org_id" else "user") in detail
    # The detail goes into WWW-Authenticate's error_description: RFC 6750's characters only.
    assert all(ch in _RFC6750_DESCRIPTION for ch in detail), detail



# End to end through the running gateway -------------------------------------------------------

MCP_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
MCP_HEADERS = {"Content-Type": "application/json",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25"}


def _call(gateway: Server, token: str, target: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"}
    if target == "/mcp":
        return httpx.post(gateway.url + "/mcp", json=MCP_LIST, headers={**MCP_HEADERS, **auth},
                          timeout=10)
    return httpx.get(gateway.url + target, headers=auth, timeout=10)


def _refused(resp: httpx.Response, phrase: str) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert (problem["status"], problem["code"]) == (401, "invalid_token")
    assert phrase in problem["detail"]
    challenge = resp.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge and phrase in challenge


@pytest.mark.parametrize("target", ["/v1/audit", "/mcp"])
def test_an_owner_of_the_reserved_platform_org_is_refused(
    gateway: Server, idp: OidcProvider, target: str
) -> None:
    # The same token shape for an ordinary organisation is served: only the name is refused.
    assert _call(gateway, idp.access_token("platform", "mallory", ["owner"]), target).is_success
    reserved = idp.access_token("_platform", "mallory", ["owner"])
    _refused(_call(gateway, reserved, target), "reserved for Gatehouse")


@pytest.mark.parametrize(("org", "user", "phrase"), [
    ("acme", "_gatehouse", "user id starts with _"),
    ("corp eng", "carol", "organisation id contains whitespace"),
    ("corp", "carol\u202e", "user id contains whitespace or a control, format"),
    ("corp", "carol\u200b", _UNPRINTABLE),
    ("corp\tx", "carol", _UNPRINTABLE),
    ("x" * 256, "carol", "longer than 255 characters"),
])
def test_ids_outside_the_rule_get_a_clear_401(
    gateway: Server, idp: OidcProvider, org: str, user: str, phrase: str
) -> None:
    _refused(_call(gateway, idp.access_token(org, user, ["owner"]), "/v1/audit"), phrase)
