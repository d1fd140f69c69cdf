"""Disconnecting a provider: revoke at the provider (:mod:`oauth.revocation`), then delete
locally.

The local row is deleted even when revocation fails (provider down, no way to revoke, or the
tokens can no longer be decrypted): the user asked to disconnect, and the outcome says whether
the provider confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass

from oauth.errors import OAuthError
from oauth.revocation import Revoke
from oauth.store import TokenStore
from sql import Tenant


@dataclass(frozen=True)
class Disconnected:
    deleted: bool  # a local connection existed and is gone
    revoked: bool  # the provider confirmed revocation


async def disconnect(
    store: TokenStore, revoke: Revoke | None, tenant: Tenant, provider: str
) -> Disconnected:
    revoked = False
    try:
        stored = await store.load_current(tenant, provider)
    except OAuthError:
        stored = None  # undecryptable: nothing to revoke with, still delete
    if stored is not None and revoke is not None:
        try:
            await revoke(stored.bundle)
            revoked = True
        except OAuthError:
            revoked = False
    return Disconnected(deleted=await store.delete(tenant, provider), revoked=revoked)
