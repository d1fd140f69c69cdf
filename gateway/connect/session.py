"""The browser's connect session: an opaque cookie naming server-side data kept in Redis.

A session starts by signing in through the issuer (``signed_in``) or, when no sign-in is
configured, by confirming a connect ticket (one-time, bound to an organisation and user; who
may redeem which ticket: :mod:`gateway.connect.tickets`). The cookie holds only 256 random
bits: no identity, no verifier, no token. Redis keeps ``{org, user, csrf, flash, signed_in}``
under the SHA-256 of that value with a TTL, so a Redis dump does not yield usable cookies and
any gateway replica can serve the browser. The *browser binding* given to mcp_server for each
authorization request is a different, domain-separated hash of the same value: a state can
only be completed by this browser.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from gateway.settings import GatewaySettings

SESSION_PREFIX = "gatehouse:connect:session:"
_DEV_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_FLASH = 5


def is_development(public_url: str) -> bool:
    """Plain-HTTP loopback deployments (``gatehouse up``, tests) cannot use Secure cookies."""
    parts = urlsplit(public_url)
    return parts.scheme == "http" and (parts.hostname or "") in _DEV_HOSTS


def cookie_name(public_url: str) -> str:
    """``__Host-`` pins the cookie to this host, path ``/`` and HTTPS (not possible in dev)."""
    return "gatehouse_connect" if is_development(public_url) else "__Host-gatehouse_connect"


def _digest(purpose: str, secret: str) -> str:
    return hashlib.sha256(f"gatehouse-connect|{purpose}|{secret}".encode()).hexdigest()


@dataclass
class BrowserSession:
    secret: str = field(repr=False)  # the cookie value
    org_id: str
    user_id: str
    csrf: str = field(repr=False)
    flash: list[dict[str, str]] = field(default_factory=list)
    signed_in: bool = False  # proven through the issuer, not only by holding a ticket

    def is_for(self, org_id: str, user_id: str) -> bool:
        return (self.org_id, self.user_id) == (org_id, user_id)

    @property
    def binding(self) -> str:
        """What binds an authorization request's state to this browser (never the cookie)."""
        return _digest("binding", self.secret)

    def say(self, kind: str, text: str) -> None:
        self.flash = [*self.flash, {"kind": kind, "text": text}][-_MAX_FLASH:]


class SessionStore:
    def __init__(self, redis: Redis, public_url: str, ttl: int) -> None:
        self._redis = redis
        self._ttl = ttl
        self._secure = not is_development(public_url)
        self.cookie = cookie_name(public_url)

    @classmethod
    def of(cls, redis: Redis, settings: GatewaySettings) -> SessionStore:
        return cls(redis, settings.public_url, settings.connect_session_ttl_seconds)

    async def create(self, org_id: str, user_id: str, *, signed_in: bool) -> BrowserSession:
        session = BrowserSession(secrets.token_urlsafe(32), org_id, user_id,
                                 secrets.token_urlsafe(32), signed_in=signed_in)
        await self.save(session)
        return session

    async def load(self, request: Request) -> BrowserSession | None:
        secret = request.cookies.get(self.cookie, "")
        if not 20 <= len(secret) <= 100:
            return None
        raw = await self._redis.get(SESSION_PREFIX + _digest("session", secret))
        if raw is None:
            return None
        data = json.loads(raw)
        return BrowserSession(secret, data["org"], data["user"], data["csrf"], data["flash"],
                              data.get("signed_in") is True)

    async def save(self, session: BrowserSession) -> None:
        data = {"org": session.org_id, "user": session.user_id, "csrf": session.csrf,
                "flash": session.flash, "signed_in": session.signed_in}
        key = SESSION_PREFIX + _digest("session", session.secret)
        await self._redis.set(key, json.dumps(data), ex=self._ttl)

    async def end(self, request: Request) -> None:
        secret = request.cookies.get(self.cookie, "")
        if secret:
            await self._redis.delete(SESSION_PREFIX + _digest("session", secret))

    def set_cookie(self, response: Response, session: BrowserSession) -> None:
        response.set_cookie(self.cookie, session.secret, max_age=self._ttl, path="/",
                            secure=self._secure, httponly=True, samesite="lax")
