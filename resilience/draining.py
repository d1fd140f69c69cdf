"""Leave a load balancer's rotation before stopping: SIGTERM turns the readiness probe 503 first.

A server that stops accepting the moment it gets SIGTERM races its balancer: until the next
failed health check the balancer keeps sending it requests, which then fail. :class:`Draining`
wraps an ASGI app: on SIGTERM the probe path answers 503 ``draining`` for ``grace`` seconds
(the balancer takes the replica out), and only then is the server's own SIGTERM handler called
(uvicorn: stop accepting, let in-flight requests and streams finish within
``--timeout-graceful-shutdown``, run the lifespan's shutdown, which flushes queued work).

SIGINT keeps its meaning of "stop now" (a terminal's Ctrl-C, or ``gatehouse up`` stopping the
whole fleet, when no balancer needs telling); a second SIGTERM during the grace also stops at
once. The server hears a first SIGINT as SIGTERM: the same graceful shutdown, but uvicorn ends
by re-raising the signal it was given, and a SIGTERM ends the process there, where a SIGINT
unwinds the whole interpreter first (about half a second of CPU, seconds on a busy machine, in
a stop that must be quick). The handlers are installed at lifespan start-up, after the server
installed its own (uvicorn does so before start-up), and the server's are put back at shutdown.
With ``grace`` 0 nothing is installed: signals behave as the server alone makes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any]
_BODY = json.dumps({"status": "draining"}).encode()


class Draining:
    """ASGI wrapper: ``probe`` answers 503 from SIGTERM until the server is told to stop."""

    def __init__(self, app: ASGIApp, *, probe: str, grace: float) -> None:
        self.app = app
        self.probe = probe
        self.grace = grace
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.grace > 0:
            await self._lifespan(scope, receive, send)
        elif self.draining and scope["type"] == "http" and scope["path"] == self.probe:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(_BODY)).encode())]})
            await send({"type": "http.response.body", "body": _BODY})
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        on_term, on_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        if not callable(on_term) or not callable(on_int):  # no server to defer to
            await self.app(scope, receive, send)
            return
        signal.signal(signal.SIGTERM, self._on_sigterm(on_term))
        signal.signal(signal.SIGINT, self._on_sigint(on_int))
        try:
            await self.app(scope, receive, send)
        finally:
            signal.signal(signal.SIGTERM, on_term)
            signal.signal(signal.SIGINT, on_int)

    def _on_sigint(self, server_handler: _Handler) -> _Handler:
        interrupted = False

        def handler(signum: int, frame: FrameType | None) -> None:
            nonlocal interrupted
            server_handler(signum if interrupted else signal.SIGTERM, frame)  # see above
            interrupted = True

        return handler

    def _on_sigterm(self, server_handler: _Handler) -> _Handler:
        loop = asyncio.get_running_loop()

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.draining:  # asked twice: stop now
                server_handler(signum, frame)
                return
            self.draining = True
            # Logged from the loop: a signal handler must not take the logging lock.
            loop.call_soon_threadsafe(self._drain, loop, server_handler, signum)

        return handler

    def _drain(self, loop: asyncio.AbstractEventLoop, server_handler: _Handler,
               signum: int) -> None:
        log.info("draining: %s answers 503 for %.1fs, then the server stops accepting",
                 self.probe, self.grace)
        loop.call_later(self.grace, server_handler, signum, None)
