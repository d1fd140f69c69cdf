"""The names of the tools mcp_server offers, so a session cannot allow a tool that does not exist.

mcp_server registers its tools at start-up (the always-present ones, then those of the enabled
providers), so the list changes only when it is restarted with other providers. The gateway
asks it with ``tools/list`` as the caller (the list is the same for every caller without an
allow-list) and keeps the answer for :data:`TTL_SECONDS`. If mcp_server cannot answer, the check
fails closed: 503, and no session is created with names nobody checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.errors import CatalogueUnreadable, UpstreamUnavailable
from gateway.principal import Principal
from oauth.assertion import CallerIdentity

if TYPE_CHECKING:  # gateway.services holds the catalogue
    from gateway.services import Services

TTL_SECONDS = 60.0
_PROTOCOL = "2025-11-25"  # answered without a handshake by the stateless server
_MAX_PAGES = 20
_TIMEOUT = aiohttp.ClientTimeout(total=5)
_log = logging.getLogger(__name__)


class ToolCatalogue:
    """The cached set of tool names; one per process, shared by all callers."""

    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self._ttl = ttl
        self._names: frozenset[str] = frozenset()
        self._expires = 0.0
        self._lock = asyncio.Lock()  # one fetch at a time; the others wait for its answer

    async def unknown(self, services: Services, principal: Principal, request_id: str,
                      wanted: list[str]) -> list[str]:
        """The names in ``wanted`` that are no tool of mcp_server's, in their order."""
        names = await self.names(services, principal, request_id)
        return [name for name in dict.fromkeys(wanted) if name not in names]

    async def names(self, services: Services, principal: Principal, request_id: str
                    ) -> frozenset[str]:
        async with self._lock:
            if time.monotonic() >= self._expires:
                self._names = await _fetch(services, principal, request_id)
                self._expires = time.monotonic() + self._ttl
            return self._names


async def _fetch(services: Services, principal: Principal, request_id: str) -> frozenset[str]:
    caller = CallerIdentity(org_id=principal.org_id, user_id=principal.user_id,
                            roles=principal.roles, request_id=request_id)
    names: set[str] = set()
    cursor: str | None = None
    try:
        for _ in range(_MAX_PAGES):
            page = await _list_page(services, services.signer.sign(caller), request_id, cursor)
            names.update(str(tool["name"]) for tool in page["tools"])
            cursor = page.get("nextCursor")
            if not cursor:
                return frozenset(names)
        raise CatalogueUnreadable(f"more than {_MAX_PAGES} pages")
    except (aiohttp.ClientError, OSError, TimeoutError, CatalogueUnreadable, KeyError,
            TypeError, ValueError) as exc:
        _log.warning("tools/list from mcp_server failed, so allowed_tools cannot be checked: %s",
                     type(exc).__name__)
        raise UpstreamUnavailable(
            "the MCP server's tool list cannot be read, so allowed_tools cannot be checked; "
            "retry", status=503, retry_after=2) from exc


async def _list_page(services: Services, assertion: str, request_id: str, cursor: str | None
                     ) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"cursor": cursor} if cursor else {}}
    headers = {"Authorization": f"Bearer {assertion}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": _PROTOCOL, "X-Request-Id": request_id}
    async with services.http.post(services.settings.mcp_server_url, data=json.dumps(body),
                                  headers=headers, timeout=_TIMEOUT) as resp:
        if resp.status != 200:
            raise CatalogueUnreadable(f"HTTP {resp.status}")
        text = await resp.text()
    result = _reply(text)["result"]
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        raise CatalogueUnreadable("no tools in the answer")
    return result


def _reply(text: str) -> dict[str, Any]:
    """The JSON-RPC reply, sent as JSON or as the data of one SSE event."""
    candidates = [line[5:] for line in text.splitlines() if line.startswith("data:")] or [text]
    for candidate in candidates:
        message = json.loads(candidate)
        if isinstance(message, dict) and message.get("id") == 1:
            return message
    raise CatalogueUnreadable("no reply to tools/list")
