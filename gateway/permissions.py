"""Roles as sets of permission strings, and the one check every endpoint uses.

A permission is ``resource:action``; a role may grant ``resource:*`` or ``*``.
``sessions:admin`` lets its holder see and close every session of the organisation.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import Forbidden
from gateway.principal import Principal

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset({"*"}),
    "admin": frozenset({"sessions:*", "prompts:*", "audit:read", "tools:*", "members:*"}),
    "member": frozenset({"sessions:read", "sessions:write", "prompts:read", "prompts:own",
                         "tools:*", "members:read"}),
    "viewer": frozenset({"sessions:read", "prompts:read", "tools:list", "members:read"}),
}


def granted(roles: Iterable[str], permission: str) -> bool:
    resource = permission.split(":", 1)[0]
    for role in roles:
        grants = ROLE_PERMISSIONS.get(role, frozenset())
        if "*" in grants or permission in grants or f"{resource}:*" in grants:
            return True
    return False


def require(principal: Principal, permission: str) -> None:
    """Raise 403 ``insufficient_scope`` naming the missing permission."""
    if not granted(principal.roles, permission):
        error = Forbidden(f"this operation requires the permission {permission}")
        error.headers["WWW-Authenticate"] = (
            f'Bearer error="insufficient_scope", scope="{permission}"'
        )
        raise error
