"""Claims to principal: configurable and nested claim names, refusal of unusable identities."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import Unauthenticated
from gateway.principal import ClaimMapping


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
