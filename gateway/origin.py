"""The Origin check on the MCP endpoint (DNS rebinding, cross-site browser requests).

The Streamable HTTP transport (MCP 2025-11-25) says a server MUST answer 403 when ``Origin``
is present and not allowed. Allowed: the origin of ``PUBLIC_URL`` plus ``ALLOWED_ORIGINS``.
A request without ``Origin`` passes: non-browser clients do not send one, and a browser always
does on the cross-origin POST a rebinding page needs (``fetch`` sends it on every POST).

``Host`` is deliberately not checked. A rebinding page's requests already carry its own Origin,
which is refused here; and the gateway usually runs behind a proxy or load balancer whose
``Host`` differs from the public URL, so a Host allow-list would break ordinary deployments for
no extra protection (besides, /mcp needs a bearer token that such a page does not have).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import Scope

from gateway.problem import problem_response

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str, *, strict: bool = False) -> str | None:
    """``scheme://host[:port]`` in canonical form (lower case, default port dropped).

    ``None`` if ``url`` has no such origin (``null``, another scheme, a malformed port). With
    ``strict``, as for an ``Origin`` header, anything beyond the origin also disqualifies it.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if strict and (parts.path or parts.query or parts.fragment or "@" in parts.netloc):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else ""
    return f"{scheme}://{host}{suffix}"


def allowed_origins(public_url: str, extra: Iterable[str]) -> frozenset[str]:
    """The canonical allow-list; a configured entry that is not an origin stops start-up."""
    allowed = set()
    for entry in (public_url, *extra):
        origin = origin_of(entry)
        if origin is None:
            raise ValueError(f"not an http(s) origin: {entry!r} (expected scheme://host[:port])")
        allowed.add(origin)
    return frozenset(allowed)


def _is_mcp(path: str) -> bool:
    return path == "/mcp" or path.startswith("/mcp/")


class OriginCheck:
    """Refuses an MCP request from a foreign origin with 403 ``origin_not_allowed`` (run by the
    gateway's edge layer before authentication, so the 403 comes first)."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    def refused(self, scope: Scope) -> bool:
        if not _is_mcp(scope["path"]):
            return False
        origins = [v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"]
        return any(origin_of(value, strict=True) not in self.allowed for value in origins)

    @staticmethod
    def response(request_id: str | None) -> Response:
        return problem_response(
            403, "origin_not_allowed", "Origin not allowed",
            "this MCP endpoint does not accept requests from the page's origin",
            request_id=request_id,
        )
