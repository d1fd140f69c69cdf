"""A loopback reverse proxy that records one request header of everything it forwards.

Put it between two real processes (point the gateway's ``GATEHOUSE_MCP_SERVER_URL`` at it) to
learn what one sends the other, such as the internal assertions the gateway mints, without
touching either. Responses are streamed through as they come (SSE included). Serve it with
:class:`tests.support.standin.Running`.
"""

from __future__ import annotations

from aiohttp import ClientSession, web
from multidict import CIMultiDict

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "host", "upgrade"})


class HeaderTap:
    def __init__(self, upstream: str, header: str = "Authorization") -> None:
        self.upstream = upstream.rstrip("/")
        self.header = header
        self.seen: list[str] = []  # the header's values, in the order requests came
        self._session: ClientSession | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._forward)
        self.app.on_cleanup.append(self._close)

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self.header in request.headers:
            self.seen.append(request.headers[self.header])
        if self._session is None:
            self._session = ClientSession(auto_decompress=False)
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in _HOP_BY_HOP)
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers,
            data=await request.read(), allow_redirects=False,
        ) as answer:
            response = web.StreamResponse(status=answer.status, headers=CIMultiDict(
                (k, v) for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP))
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
