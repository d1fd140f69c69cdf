"""Disconnecting a provider: revoke at the provider (RFC 7009), then delete locally.

The local row is deleted even when revocation fails (provider down, no revocation endpoint, or
the tokens can no longer be decrypted): the user asked to disconnect, and the outcome says
whether the provider confirmed. Revoking the refresh token also ends its access tokens (RFC
7009 §2.1); without one the access token is revoked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from oauth.errors import OAuthError
from oauth.store import TokenStore
from sql import Tenant

Revoke = Callable[[str, str], Awaitable[None]]  # (token, token_type_hint)


@dataclass(frozen=True)
class Disconnected:
    deleted: bool  # a local connection existed and is gone
    revoked: bool  # the provider confirmed revocation (HTTP 200, also for unknown tokens)


async def disconnect(
    store: TokenStore, revoke: Revoke | None, tenant: Tenant, provider: str
) -> Disconnected:
    revoked = False
    try:
        stored = await store.load_current(tenant, provider)
    except OAuthError:
        stored = None  # undecryptable: nothing to revoke with, still delete
    if stored is not None and revoke is not None:
        bundle = stored.bundle
        token, hint = (
            (bundle.refresh_token, "refresh_token")
            if bundle.refresh_token
            else (bundle.access_token, "access_token")
        )
        try:
            await revoke(token, hint)
            revoked = True
        except OAuthError:
            revoked = False
    return Disconnected(deleted=await store.delete(tenant, provider), revoked=revoked)
