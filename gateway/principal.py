"""Who is calling: the typed contract between authentication and everything after it.

Organisation and user ids come from the token's claims and end up in SQL rows, Redis keys, cache
keys, audit rows and prompt variables, so they are checked once, here, and refused with a 401:

* 1-255 characters (code points);
* printable, without whitespace: no character of the Unicode categories C* (control, format such
  as zero-width or bidi marks, surrogate, private use, unassigned) or Z* (spaces, line and
  paragraph separators). Everything else is allowed, including ``:`` ``|`` ``@`` ``.`` ``-``
  ``_`` ``/`` and non-Latin letters, because real issuers' subjects look like ``auth0|123``,
  ``alice@example.com`` or URNs. Ids are compared exactly, never normalised (an issuer's ``sub``
  is case-sensitive); keys built from them go through :func:`resilience.keys.key_of`, so
  separators inside ids cannot make two tenants share a key;
* not starting with ``_``: that prefix is Gatehouse's own (``_platform`` holds the global
  prompt layer and the authentication-failure audit, ``_gatehouse`` is the system user of
  background work), so no token can act as or inside them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import Unauthenticated

_MAX_ID = 255
RESERVED_PREFIX = "_"  # ids of Gatehouse's own pseudo-organisation and system user
_MAX_ROLES = 32


@dataclass(frozen=True)
class Principal:
    org_id: str
    user_id: str
    roles: tuple[str, ...]
    scopes: frozenset[str]
    platform_admin: bool = False
    # Display attributes from the token, offered to prompt templates as data.
    profile: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimMapping:
    """Where each identity fact lives in the token; dotted paths reach nested claims."""

    org: str = "org_id"
    user: str = "sub"
    roles: str = "roles"
    platform_admin: str = "gatehouse_platform_admin"
    default_roles: Sequence[str] = ("member",)

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        return Principal(
            org_id=_identifier(_lookup(claims, self.org), "organisation"),
            user_id=_identifier(_lookup(claims, self.user), "user"),
            roles=_roles(_lookup(claims, self.roles), self.default_roles),
            scopes=_scopes(claims.get("scope")),
            platform_admin=_lookup(claims, self.platform_admin) is True,
            profile=_profile(claims),
        )


def _lookup(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _identifier(value: Any, what: str) -> str:
    # The details name the rule, never the value (it is caller text and ends up in a header).
    if not isinstance(value, str) or not value:
        raise Unauthenticated(f"token lacks a usable {what} id claim")
    if len(value) > _MAX_ID:
        raise Unauthenticated(f"token's {what} id is longer than {_MAX_ID} characters")
    if any(unicodedata.category(ch)[0] in "CZ" for ch in value):
        raise Unauthenticated(
            f"token's {what} id contains whitespace or a control, format, private-use or "
            "unassigned character; ids must be printable text without spaces")
    if value.startswith(RESERVED_PREFIX):
        raise Unauthenticated(
            f"token's {what} id starts with {RESERVED_PREFIX}, which is reserved for Gatehouse")
    return value


def _roles(value: Any, default: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or len(value) > _MAX_ROLES:
        raise Unauthenticated("token's roles claim is malformed")
    roles = []
    for role in value:
        if not isinstance(role, str) or not role or len(role) > 64:
            raise Unauthenticated("token's roles claim is malformed")
        roles.append(role)
    return tuple(sorted(set(roles)))


_PROFILE_CLAIMS = ("name", "email", "preferred_username", "locale", "zoneinfo")


def _profile(claims: Mapping[str, Any]) -> dict[str, str]:
    return {
        name: value
        for name in _PROFILE_CLAIMS
        if isinstance(value := claims.get(name), str) and len(value) <= 256
    }


def _scopes(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    return frozenset()
