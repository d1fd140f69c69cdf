"""The gateway's calls to mcp_server's internal connect endpoints.

Each call carries an internal assertion signed for the browser session's organisation and
user, exactly as ``/mcp`` traffic does; mcp_server trusts nothing else about the caller. The
gateway never sees a client secret, a verifier or a provider token: only URLs and outcomes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.connect.session import BrowserSession
from gateway.errors import InternalError
from gateway.services import Services
from oauth.assertion import CallerIdentity

_MAX_ANSWER = 262_144


def internal_base(services: Services) -> str:
    url = services.settings.mcp_server_url.rstrip("/")
    return url.removesuffix("/mcp")


async def call(
    services: Services, session: BrowserSession, method: str, path: str,
    body: dict[str, Any] | None = None, *, provider: str | None = None,
) -> dict[str, Any]:
    """JSON from ``/internal/connect/...``; :class:`InternalError` for anything else."""
    if provider is not None:
        path = f"/{quote(provider, safe='')}{path}"
    caller = CallerIdentity(org_id=session.org_id, user_id=session.user_id,
                            request_id=uuid.uuid4().hex)
    headers = {"Authorization": "Bearer " + services.signer.sign(caller),
               "Accept": "application/json", "X-Request-Id": caller.request_id}
    url = f"{internal_base(services)}/internal/connect{path}"
    try:
        async with services.http.request(
            method, url, json=body, headers=headers, allow_redirects=False
        ) as response:
            raw = await response.content.read(_MAX_ANSWER)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        raise InternalError(503, "unavailable", "The connection service is unavailable; "
                            "try again shortly.") from None
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise InternalError(502, "unavailable", "The connection service answered oddly.")
    if status != 200:
        raise InternalError(status, str(document.get("code", "error")),
                            str(document.get("message", "The request was refused.")))
    return document
