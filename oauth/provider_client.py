"""Calling a provider's API with a user's access token: bounded, breaker-guarded, error-mapped.

One :class:`ProviderApi` per provider shares the process's ``aiohttp`` session and the
provider's :class:`~resilience.CircuitBreaker`. Every call has a total timeout and a response
size cap, follows at most a few redirects and only to the same origin (the bearer token must
never travel to another host), and turns the provider's answer into one of (the errors live in
:mod:`oauth.errors`):

* a parsed JSON document (success);
* :class:`ProviderUnauthorized` — the token is no longer accepted (401; Slack ``invalid_auth``);
* :class:`MissingScope` — 403 naming (or implying) scopes the token lacks;
* :class:`ProviderUnavailable` — 5xx, timeouts and connection failures: these, and only
  these, count as breaker failures; 4xx answers are business errors and never trip it;
* :class:`ProviderRateLimited` — 429 (or GitHub's exhausted-quota 403): unavailable for this
  token for now, but a quota is per user or per app, so it must not open the breaker that
  every organisation shares;
* :class:`ProviderRejected` — any other refusal, by status code only.

Provider bodies are never copied into error messages (SECURITY 53), except Slack's documented
error *codes* when they look like codes; the token never appears in any message.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDictProxy

from oauth.catalogue import ProviderSpec
from oauth.errors import (
    MissingScope,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnauthorized,
    ProviderUnavailable,
)
from resilience import BreakerTicket, CircuitBreaker

MAX_RESPONSE_BYTES = 1_048_576
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
SLACK_AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
)
_CODE = re.compile(r"^[a-z_]{1,64}$")
_SCOPE = re.compile(r"^[A-Za-z0-9:._/-]{1,100}$")
_SCOPE_ATTR = re.compile(r'scope="([^"]*)"')


def is_breaker_failure(exc: Exception) -> bool:
    return isinstance(exc, ProviderUnavailable) and not isinstance(exc, ProviderRateLimited)


class ProviderApi:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        spec: ProviderSpec,
        breaker: CircuitBreaker,
        *,
        timeout: float = 10.0,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self.spec = spec
        self._breaker = breaker
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._ticket: BreakerTicket | None = None

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    def admitted(self, ticket: BreakerTicket | None,
                 breaker: CircuitBreaker | None = None) -> ProviderApi:
        """This API for one tool call whose first request the breaker already admitted (in
        the same Redis round trip as the rate limits); later requests are admitted as usual.
        ``breaker``: the one that admitted it, if not this API's (e.g. the caller's
        organisation's, :meth:`CircuitBreaker.scoped`)."""
        view = copy.copy(self)
        view._ticket = ticket
        view._breaker = breaker or self._breaker
        return view

    async def release_unused(self) -> None:
        """The admitted request was never made: give its half-open trial slot back."""
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            await self._breaker.release(ticket)

    def url(self, path: str) -> str:
        """``path`` (already percent-encoded by the caller) under the API base URL."""
        return self.spec.api_base_url + path

    async def request(
        self,
        token: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: object = None,
    ) -> Any:
        """Call ``url`` as the token's owner; the parsed JSON answer or a ProviderCallError."""
        headers = {"Accept": "application/json", **self.spec.api_headers,
                   "Authorization": f"Bearer {token}"}
        payload = None
        if json_body is not None:  # with a charset: Slack warns about JSON bodies without one
            headers["Content-Type"] = "application/json; charset=utf-8"
            payload = json.dumps(json_body).encode()
        ticket, self._ticket = self._ticket, None
        async with self._breaker.guard(ticket):
            status, response_headers, body = await self._send(
                method, url, headers, params, payload
            )
            return self._interpret(status, response_headers, body)  # inside: 5xx trips it

    async def _send(
        self, method: str, url: str, headers: dict[str, str],
        params: Mapping[str, str] | None, payload: bytes | None,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        origin = _origin(url)
        try:
            async with asyncio.timeout(self._timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    async with self._session.request(
                        method, url, headers=headers, params=params, data=payload,
                        allow_redirects=False,
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status not in _REDIRECTS or not location:
                            body = await response.content.read(self._max_bytes + 1)
                            return response.status, response.headers, body
                    url, params = urljoin(str(response.url), location), None
                    if _origin(url) != origin:
                        raise ProviderRejected(self.spec.display_name, response.status,
                                               "redirect_to_other_host")
                    if response.status == 303:
                        method, payload = "GET", None
                        headers.pop("Content-Type", None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderUnavailable(self.spec.display_name, type(exc).__name__) from None
        raise ProviderRejected(self.spec.display_name, 310, "too_many_redirects")

    def _interpret(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> Any:
        name = self.spec.display_name
        if status == 401:
            raise ProviderUnauthorized(f"{name} no longer accepts this connection's token")
        if status == 429:
            raise ProviderRateLimited(name, "rate limited, HTTP 429")
        if status >= 500:
            raise ProviderUnavailable(name, f"HTTP {status}")
        if status == 403:
            self._raise_forbidden(headers)
        if len(body) > self._max_bytes:
            raise ProviderRejected(name, status, "response_too_large")
        document = _json(body)
        if not 200 <= status < 300:
            raise ProviderRejected(name, status)
        if self.spec.error_style == "slack":
            _check_slack(name, document)
        return document

    def _raise_forbidden(self, headers: CIMultiDictProxy[str]) -> None:
        name = self.spec.display_name
        if headers.get("X-RateLimit-Remaining") == "0" or "Retry-After" in headers:
            raise ProviderRateLimited(name, "rate limited, HTTP 403")
        accepted = _split(headers.get("X-Accepted-OAuth-Scopes", ""))
        granted = set(_split(headers.get("X-OAuth-Scopes", "")))
        if accepted and not granted.intersection(accepted):
            raise MissingScope(name, tuple(s for s in accepted if _SCOPE.match(s)))
        challenge = headers.get("WWW-Authenticate", "")
        if "insufficient_scope" in challenge:
            match = _SCOPE_ATTR.search(challenge)
            named = match.group(1).split() if match else []
            raise MissingScope(name, tuple(s for s in named if _SCOPE.match(s)))
        raise ProviderRejected(name, 403)


def _check_slack(name: str, document: Any) -> None:
    """Slack answers HTTP 200 with ``{"ok": false, "error": code}``."""
    if not isinstance(document, dict) or document.get("ok") is not False:
        return
    code = str(document.get("error", ""))
    if code in SLACK_AUTH_ERRORS:
        raise ProviderUnauthorized(f"{name} no longer accepts this connection's token")
    if code == "missing_scope":
        needed = str(document.get("needed", ""))
        raise MissingScope(name, tuple(s for s in needed.split(",") if _SCOPE.match(s)))
    if code == "ratelimited":
        raise ProviderRateLimited(name, code)
    if code in ("service_unavailable", "fatal_error", "internal_error"):
        raise ProviderUnavailable(name, code)
    raise ProviderRejected(name, 200, code if _CODE.match(code) else None)


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _split(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port
