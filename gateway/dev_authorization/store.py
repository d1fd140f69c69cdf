"""Redis storage of the development authorization server: clients, codes, refresh tokens.

Codes and refresh tokens are stored under their SHA-256, never in clear, and are *taken*
(``GETDEL``): a second use finds nothing, however close together the two uses are, so one code
or refresh token can never yield two grants. A marker that outlives each code and token names
its grant family; presenting one again after use revokes the whole family (OAuth 2.1 §4.3.1,
RFC 6749 §4.1.2), so a stolen, already-rotated refresh token also ends the thief's copy.
"""

from __future__ import annotations

import hashlib
import time

from redis.asyncio import Redis

from gateway.dev_authorization.models import AuthorizationCode, Client, DevUser, RefreshRecord
from resilience.keys import key_of

NAMESPACE = "gatehouse-devauth"
CLIENT_TTL = 30 * 86_400
CODE_TTL = 300
REFRESH_TTL = 7 * 86_400


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(kind: str, identifier: str) -> str:
    return key_of(NAMESPACE, kind, identifier)


class DevStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def save_client(self, client: Client) -> None:
        await self._redis.set(_key("client", client.client_id), client.to_json(), ex=CLIENT_TTL)

    async def client(self, client_id: str) -> Client | None:
        raw = await self._redis.get(_key("client", client_id))
        return Client.from_json(raw) if raw is not None else None

    async def save_code(self, code: str, record: AuthorizationCode) -> None:
        hashed = digest(code)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_key("code", hashed), record.to_json(), ex=CODE_TTL)
            pipe.set(_key("code-issued", hashed), record.family, ex=REFRESH_TTL)
            await pipe.execute()

    async def take_code(self, code: str) -> AuthorizationCode | None:
        hashed = digest(code)
        raw = await self._redis.getdel(_key("code", hashed))
        if raw is None:
            await self._revoke_if_issued(_key("code-issued", hashed))
            return None
        return AuthorizationCode.from_json(raw)

    async def save_refresh(
        self, token: str, client_id: str, scope: str, user: DevUser, family: str
    ) -> None:
        hashed = digest(token)
        record = RefreshRecord(client_id, scope, user, family, time.time() + REFRESH_TTL)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(_key("refresh", hashed), record.to_json(), ex=REFRESH_TTL)
            pipe.set(_key("refresh-issued", hashed), family, ex=REFRESH_TTL)
            await pipe.execute()

    async def take_refresh(self, token: str) -> RefreshRecord | None:
        """The refresh token's record, consumed; None if unknown, used before, or revoked."""
        hashed = digest(token)
        raw = await self._redis.getdel(_key("refresh", hashed))
        if raw is None:
            await self._revoke_if_issued(_key("refresh-issued", hashed))
            return None
        record = RefreshRecord.from_json(raw)
        if await self._redis.exists(_key("revoked", record.family)):
            return None
        return record

    async def _revoke_if_issued(self, marker: str) -> None:
        family = await self._redis.get(marker)
        if family is not None:
            name = family.decode() if isinstance(family, bytes) else str(family)
            await self._redis.set(_key("revoked", name), "1", ex=REFRESH_TTL)
