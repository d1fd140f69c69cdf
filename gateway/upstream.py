"""Persistent HTTP/1.1 connections to the one upstream every MCP request goes to (mcp_server).

aiohttp's client spent about 160 µs of CPU per forwarded request on this machine (URL and
cookie handling, multidicts, a task per request body, tracing hooks); this pool, which speaks
only what forwarding needs, spends about 50 µs (issue 14). It sends one request at a time per
connection, with a known body length; it reads the answer with httptools (uvicorn's own parser),
``Content-Length`` or chunked, and hands the body on chunk by chunk as it arrives (an SSE
stream is never buffered: reading pauses while a slow caller has not taken what came).

A connection goes back to the pool only when its answer was read to the end and the server
keeps it alive; idle ones are dropped before uvicorn's keep-alive (5 s) would close them. A
request that only reads, on a reused connection the server closed before answering a single
byte, is sent once more on a fresh one; any other request is not (the server, or the balancer
in front of it, may have acted on it before the connection broke). Failures are
:class:`gateway.errors.UpstreamFailed` (a ``ConnectionError``); a connection not accepted within
``connect_timeout`` is a :class:`gateway.errors.ConnectTimeout`, an answer waited for longer than
``read_timeout`` a ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.errors import ConnectTimeout, UpstreamFailed

IDLE_SECONDS = 4.0  # below uvicorn's default --timeout-keep-alive of 5 s
MAX_IDLE = 64
HIGH_WATER = 256 * 1024  # bytes read but not yet taken: reading pauses above this


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.answered = False  # any byte of an answer arrived
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.started = False  # status line and headers parsed
        self.keep_alive = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailed(f"malformed answer from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamFailed("upstream closed the connection"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.started = True
        self.keep_alive = self.parser.should_keep_alive()  # reset once the message completes
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- the exchange
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def wait(self, seconds: float) -> None:
        """Until something arrives (or went wrong)."""
        if self.error is not None:
            raise self.error
        self.waiter = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(seconds):
            await self.waiter
        self.waiter = None
        if self.error is not None and not self.chunks:
            raise self.error

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.buffered <= HIGH_WATER // 2 and self.transport is not None:
            self.transport.resume_reading()
        return chunk

    def send(self, head: bytes, body: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.writelines((head, body))

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """An answer being read; leave its ``async with`` to give the connection back."""

    def __init__(self, pool: Upstream, conn: _Connection, read_timeout: float) -> None:
        self._pool, self._conn, self._timeout = pool, conn, read_timeout
        self.status = conn.parser.get_status_code()
        self.headers = conn.headers

    def header(self, name: bytes) -> str:
        return next((v.decode("latin-1") for k, v in self.headers if k == name), "")

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            while conn.chunks:
                yield conn.take()
            if conn.complete:
                return
            await conn.wait(self._timeout)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._pool.release(self._conn)


class Upstream:
    """A pool of keep-alive connections to the origin of ``url``; requests go to its path."""

    def __init__(self, url: str, *, connect_timeout: float, read_timeout: float,
                 max_connections: int = 256) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        self._line = f" {target} HTTP/1.1\r\nhost: {authority}\r\n".encode("latin-1")
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)

    async def request(self, method: str, headers: dict[str, str], body: bytes, *,
                      replayable: bool = False) -> UpstreamResponse:
        """Send one request. Only a ``replayable`` one (it changes nothing) is sent again when a
        reused connection breaks before any answer: the server may have acted on the first."""
        head = self._head(method, headers, len(body))
        await self._slots.acquire()
        try:
            conn, reused = await self._connection()
            try:
                return await self._exchange(conn, head, body)
            except UpstreamFailed:
                if not (replayable and reused) or conn.answered:
                    raise
            conn, _ = await self._connection(fresh=True)  # the server closed an idle one
            return await self._exchange(conn, head, body)
        except BaseException:
            self._slots.release()
            raise

    def _head(self, method: str, headers: dict[str, str], length: int) -> bytes:
        if any("\r" in v or "\n" in v for v in headers.values()):
            raise ValueError("header values cannot hold line breaks")  # request smuggling
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return b"".join((method.encode("ascii"), self._line, lines.encode("latin-1"),
                         b"content-length: %d\r\n\r\n" % length))

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes) -> UpstreamResponse:
        conn.send(head, body)
        try:
            while not conn.started:
                await conn.wait(self._read_timeout)
        except BaseException:
            conn.close()
            raise
        return UpstreamResponse(self, conn, self._read_timeout)

    async def _connection(self, fresh: bool = False) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle and not fresh:
            conn = self._idle.pop()  # the most recently used: the least likely to be closed
            if not conn.closed and now - conn.idle_since < IDLE_SECONDS:
                return conn, True
            conn.close()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await asyncio.get_running_loop().create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl)
        except TimeoutError as exc:  # before OSError, which it is too
            raise ConnectTimeout("upstream did not accept a connection in time") from exc
        except OSError as exc:
            raise UpstreamFailed(f"cannot connect to upstream: {type(exc).__name__}") from exc
        return conn, False

    def release(self, conn: _Connection) -> None:
        """Back to the pool if its answer was read to the end and it stays open."""
        self._slots.release()
        if conn.reusable() and len(self._idle) < MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
