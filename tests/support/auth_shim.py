"""A test-only loopback proxy that adds ``Authorization: Bearer <token>`` and forwards the rest.

For clients that cannot be given a token, such as the MCP conformance suite: everything else
(method, path, body, and in particular ``Origin`` and ``Host``) reaches the gateway as sent,
and the answer (status, headers, streamed body) comes back as the gateway sent it.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.support.processes import free_port

# Hop-by-hop headers (RFC 9110 section 7.6.1) and framing that each connection sets itself.
_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "content-length", "authorization",
})


def _end_to_end(headers: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items() if k.lower() not in _HOP]


class AuthShim:
    """``with AuthShim(upstream, token, port) as shim:`` serves on ``shim.url`` in a thread."""

    def __init__(self, upstream: str, token: str, port: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.token = token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        session = self._session
        headers = [*_end_to_end(request.headers), ("Authorization", f"Bearer {self.token}")]
        async with session.request(
            request.method, self.upstream + request.rel_url.raw_path_qs,
            headers=headers, data=await request.read(), allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in _end_to_end(upstream.headers):
                response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # Verbatim both ways: no compression negotiation, no default User-Agent.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent")
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await self._session.close()
        await runner.cleanup()

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    def __enter__(self) -> AuthShim:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the auth shim did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._loop.close()
