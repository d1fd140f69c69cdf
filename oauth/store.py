"""Storage of each user's provider connections, tokens sealed by the :class:`~oauth.vault.Vault`.

Every call runs in :func:`sql.rls_transaction` for the tenant, so row-level security (not only
this code) keeps one user's tokens from another. The user must already exist (the gateway
provisions users just in time). Only ciphertext, nonce and key id reach the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from oauth.errors import NeedsReconnect
from oauth.keyring import Keyring
from oauth.vault import ConnectionRef, Sealed, TokenBundle, Vault
from sql import QUERIES, Tenant, rls_transaction


@dataclass(frozen=True)
class ConnectionInfo:
    """A connection as a user or admin may see it: no tokens."""

    provider: str
    account: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    needs_reconnect: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredTokens:
    """Decrypted tokens and the version they were read at (for compare-and-set writes)."""

    bundle: TokenBundle
    version: int
    needs_reconnect: bool


def _ref(tenant: Tenant, provider: str) -> ConnectionRef:
    return ConnectionRef(tenant.org_id, tenant.user_id, provider)


def _sealed(row: asyncpg.Record) -> Sealed:
    return Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"]))


class TokenStore:
    def __init__(self, pool: asyncpg.Pool, keyring: Keyring) -> None:
        self._pool = pool
        self._vault = Vault(keyring)

    @property
    def vault(self) -> Vault:
        return self._vault

    async def save(
        self, tenant: Tenant, provider: str, bundle: TokenBundle, *, account: str = ""
    ) -> int:
        """Store the tokens of a new or renewed connection (clears ``needs_reconnect``);
        returns the new version. The scopes column copies ``bundle.scopes``."""
        sealed = self._vault.seal(_ref(tenant, provider), bundle)
        async with rls_transaction(self._pool, tenant) as conn:
            version = await conn.fetchval(
                QUERIES["upsert_connection"],
                tenant.org_id, tenant.user_id, provider, account, list(bundle.scopes),
                sealed.key_id, sealed.nonce, sealed.ciphertext, bundle.expires_at,
            )  # fmt: skip
        return int(version)

    async def load_current(self, tenant: Tenant, provider: str) -> StoredTokens | None:
        """The decrypted tokens with their version, or None when not connected."""
        async with rls_transaction(self._pool, tenant) as conn:
            row = await conn.fetchrow(
                QUERIES["get_connection"], tenant.org_id, tenant.user_id, provider
            )
        if row is None:
            return None
        bundle = self._vault.open(_ref(tenant, provider), _sealed(row))
        return StoredTokens(bundle, row["version"], row["needs_reconnect"])

    async def load(self, tenant: Tenant, provider: str) -> TokenBundle | None:
        """The decrypted tokens, None when not connected; :class:`NeedsReconnect` when the
        provider refused the refresh token."""
        stored = await self.load_current(tenant, provider)
        if stored is None:
            return None
        if stored.needs_reconnect:
            raise NeedsReconnect(provider)
        return stored.bundle

    async def replace_tokens(
        self, tenant: Tenant, provider: str, bundle: TokenBundle, *, version: int
    ) -> int | None:
        """Store refreshed tokens if the row is still at ``version``; the new version, or None
        when it changed (reconnected, disconnected or marked) in the meantime."""
        sealed = self._vault.seal(_ref(tenant, provider), bundle)
        async with rls_transaction(self._pool, tenant) as conn:
            new = await conn.fetchval(
                QUERIES["replace_connection_tokens"],
                tenant.org_id, tenant.user_id, provider, version, list(bundle.scopes),
                sealed.key_id, sealed.nonce, sealed.ciphertext, bundle.expires_at,
            )  # fmt: skip
        return None if new is None else int(new)

    async def mark_needs_reconnect(
        self, tenant: Tenant, provider: str, *, version: int | None = None
    ) -> bool:
        """Flag the connection (only at ``version`` if given); whether a row was flagged."""
        async with rls_transaction(self._pool, tenant) as conn:
            marked = await conn.fetchval(
                QUERIES["mark_connection_needs_reconnect"],
                tenant.org_id, tenant.user_id, provider, version,
            )  # fmt: skip
        return marked is not None

    async def delete(self, tenant: Tenant, provider: str) -> bool:
        """Forget the connection locally; whether there was one. (Revoke at the provider
        first: :func:`oauth.token_endpoint.revoke`.)"""
        async with rls_transaction(self._pool, tenant) as conn:
            gone = await conn.fetchval(
                QUERIES["delete_connection"], tenant.org_id, tenant.user_id, provider
            )
        return gone is not None

    async def info(self, tenant: Tenant, provider: str) -> ConnectionInfo | None:
        """The connection's description without decrypting anything."""
        async with rls_transaction(self._pool, tenant) as conn:
            row = await conn.fetchrow(
                QUERIES["get_connection"], tenant.org_id, tenant.user_id, provider
            )
        if row is None:
            return None
        return ConnectionInfo(
            provider=row["provider"],
            account=row["account"],
            scopes=tuple(row["scopes"]),
            expires_at=row["expires_at"],
            needs_reconnect=row["needs_reconnect"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
