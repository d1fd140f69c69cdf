"""The gateway's keep-alive pool to mcp_server (gateway/upstream.py), against real servers on
loopback: connections reused, answers streamed as they arrive, a connection the server closed
while idle retried once, a half-read answer never reused, timeouts and refusals typed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from gateway.errors import ConnectTimeout, UpstreamFailed
from gateway.upstream import Upstream
from tests.support.processes import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def asgi_server(app: Callable[[Scope, Receive, Send], Awaitable[None]]
                      ) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


async def drain(pool: Upstream, body: bytes = b"{}", *, replayable: bool = False
                ) -> tuple[int, bytes]:
    headers = {"content-type": "application/json"}
    async with await pool.request("POST", headers, body, replayable=replayable) as r:
        return r.status, await r.read()


def pool_for(url: str, read_timeout: float = 5) -> Upstream:
    return Upstream(url, connect_timeout=2, read_timeout=read_timeout)


async def test_answers_and_connections_are_reused() -> None:
    clients: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clients.append(scope["client"])
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json"), (b"x-seen", b"1")]})
        await send({"type": "http.response.body", "body": b'{"echo":' + body + b"}"})

    async with asgi_server(app) as url:
        pool = pool_for(url)
        for n in range(5):
            async with await pool.request("POST", {"mcp-method": "ping"}, b"%d" % n) as r:
                assert (r.status, r.header(b"x-seen"), await r.read()) == (
                    201, "1", b'{"echo":%d}' % n)
        await pool.close()
    assert len(clients) == 5 and len(set(map(str, clients))) == 1  # one connection


async def test_a_stream_is_handed_on_before_it_ends() -> None:
    first_seen = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await first_seen.wait()  # the rest only once the client has the first event
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    async with asgi_server(app) as url:
        pool = pool_for(url)
        async with await pool.request("POST", {}, b"{}") as r:
            chunks = []
            async for chunk in r.chunks():
                chunks.append(chunk)
                first_seen.set()
        assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n" and len(chunks) >= 2
        await pool.close()


async def test_a_connection_closed_while_idle_is_retried_on_a_fresh_one() -> None:
    served = 0

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                              ) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # says keep-alive
        await writer.drain()
        writer.close()  # ... and closes anyway

    async with raw_server(once_then_close) as url:
        pool = pool_for(url)
        answers = [await drain(pool, replayable=True) for _ in range(4)]
        assert answers == [(200, b"ok")] * 4
        assert served == 4
        await pool.close()


async def test_a_request_that_may_have_acted_is_never_sent_twice() -> None:
    """A tools/call on a reused connection that breaks before any answer: the server may have
    acted on it, so it is an error, never a second delivery."""
    received = 0

    async def answer_once_then_drop(reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await read_request(reader)
        received += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the second request arrives on the kept-alive connection
        received += 1
        writer.close()  # ... and the server dies before answering it

    async with raw_server(answer_once_then_drop) as url:
        pool = pool_for(url)
        assert await drain(pool) == (200, b"ok")
        with pytest.raises(UpstreamFailed):
            await drain(pool)
        assert received == 2  # delivered once, not again on a fresh connection
        await pool.close()


async def test_a_half_read_answer_is_never_reused() -> None:
    clients: list[object] = []
    released = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clients.append(scope["client"])
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        if len(clients) == 1:
            await released.wait()  # the rest comes only after the client gave up on it
        await send({"type": "http.response.body", "body": b"y" * 1000})

    async with asgi_server(app) as url:
        pool = pool_for(url)
        async with await pool.request("POST", {}, b"{}") as r:
            async for _ in r.chunks():
                break  # left unread
        released.set()
        assert await drain(pool) == (200, b"x" * 1000 + b"y" * 1000)
        await pool.close()
    assert len(set(map(str, clients))) == 2


async def test_an_upstream_dying_mid_answer_is_an_error() -> None:
    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async with raw_server(dies) as url:
        pool = pool_for(url)
        with pytest.raises(UpstreamFailed):
            await drain(pool)


async def test_silence_times_out_and_refusal_is_typed() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with raw_server(silent) as url:
        with pytest.raises(TimeoutError):
            await drain(pool_for(url, read_timeout=0.3))
    with pytest.raises(UpstreamFailed):  # nothing listens there
        await drain(pool_for(f"http://127.0.0.1:{free_port()}/mcp"))
    assert issubclass(ConnectTimeout, TimeoutError)


async def test_line_breaks_in_a_header_value_are_refused() -> None:
    pool = pool_for("http://127.0.0.1:9/mcp")
    with pytest.raises(ValueError, match="line breaks"):
        await pool.request("POST", {"x-a": "1\r\nx-injected: 1"}, b"{}")
