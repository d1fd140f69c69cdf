"""Operational endpoints: liveness, readiness, metrics, RFC 9728 metadata, development JWKS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.dev_issuer_keys import public_jwks
from gateway.errors import NotFound
from gateway.services import Services, services_of
from resilience.health import health_of
from resilience.redis import COMMAND_TIMEOUT

_CHECK_TIMEOUT = 2.0


def _services(request: Request) -> Services:
    return services_of(request.scope)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _timed(check: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), _CHECK_TIMEOUT)
    except Exception as exc:  # readiness reports any failure; it never raises
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def readyz(request: Request) -> Response:
    checks = await dependency_checks(_services(request))
    ready = all(c["ok"] for c in checks.values())
    degraded = any(c.get("degraded") for c in checks.values())
    status = "unready" if not ready else "degraded" if degraded else "ready"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)


async def dependency_checks(services: Services) -> dict[str, dict[str, Any]]:
    """Each dependency's readiness (``/readyz``, and ``/metrics`` at every scrape)."""

    async def upstream() -> None:
        url = services.settings.mcp_server_url.rsplit("/", 1)[0] + "/healthz"
        async with services.http.get(url) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)

    async def jwks() -> None:
        if not await services.jwks.ready():
            raise RuntimeError("no keys")

    names = ("database", "redis", "mcp_server", "jwks")
    results = await asyncio.gather(
        _timed(lambda: services.pool.fetchval("SELECT 1")),
        _redis_check(services),
        _timed(upstream),
        _timed(jwks),
    )
    return dict(zip(names, results, strict=True))


async def _redis_check(services: Services) -> dict[str, Any]:
    """Redis slower than its timeout is "degraded", not ready: every replica shares it, and
    the limits take their documented fallback meanwhile, so the replica still serves."""
    check = await _timed(services.redis.ping)
    health = health_of(services.redis)
    timed_out = check.get("error") == "TimeoutError"
    slow = check.get("latency_ms", 0) > COMMAND_TIMEOUT * 1000
    if timed_out or slow or health.status == "degraded":
        return {**check, "ok": True, "degraded": True, "limits": health.status}
    return {**check, "limits": health.status}


async def metrics(request: Request) -> Response:
    services = _services(request)
    services.metrics.readiness(await dependency_checks(services))
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def protected_resource_metadata(request: Request) -> Response:
    """RFC 9728 metadata for the MCP endpoint, at the root and the path-suffixed location."""
    settings = _services(request).settings
    suffix = request.path_params.get("resource", "")
    if suffix not in ("", "mcp"):
        raise NotFound("no such protected resource")
    return JSONResponse({
        "resource": settings.resource_url,
        "authorization_servers": [settings.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Gatehouse MCP gateway",
    })


async def dev_jwks(request: Request) -> Response:
    key_file = _services(request).settings.dev_issuer_key_file
    if key_file is None:
        raise NotFound("not found")
    return JSONResponse(public_jwks(key_file), headers={"Cache-Control": "max-age=60"})
