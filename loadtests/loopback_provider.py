"""The cheapest loopback provider we can run: GitHub's ``GET /user`` for one access token.

The provider-tool benchmark measures what *Gatehouse* adds to a tool call: the limits, the
breaker, the vault, and one real HTTP request through the same :class:`oauth.ProviderApi` code
path that talks to api.github.com. A provider's own answer time is not ours, so the benchmark
needs a provider that answers in as little time as possible: this one parses requests with
``httptools`` (the parser uvicorn uses), keeps connections alive, checks the bearer token, and
answers a canned body in GitHub's documented shape (``/user``, API version 2022-11-28). The
full GitHub stand-in (``tests.support.github_standin``, an aiohttp application) spends about
0.35-0.7 ms of CPU per answer on this machine, more than the whole budget being measured.

    LOOPBACK_PROVIDER_TOKEN=gho_... python -m loadtests.loopback_provider --port 9999

Anything but ``GET /user`` with the right token gets GitHub's 401/404 answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import cast

import httptools
import uvloop

USER = json.dumps({
    "login": "bench-user", "id": 1, "node_id": "U_1", "type": "User", "site_admin": False,
    "name": "Bench User", "html_url": "https://github.com/bench-user",
    "url": "https://api.github.com/users/bench-user", "created_at": "2024-01-01T00:00:00Z",
}).encode()
UNAUTHORIZED = b'{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}'
NOT_FOUND = b'{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}'


def response(status: bytes, body: bytes, scopes: bytes = b"") -> bytes:
    head = [b"HTTP/1.1 " + status, b"Content-Type: application/json; charset=utf-8",
            b"Content-Length: " + str(len(body)).encode(), b"X-GitHub-Api-Version: 2022-11-28"]
    if scopes:
        head.append(b"X-OAuth-Scopes: " + scopes)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class GitHubUser(asyncio.Protocol):
    def __init__(self, token: bytes) -> None:
        self._answers = {
            True: response(b"200 OK", USER, b"repo, read:user"),
            False: response(b"401 Unauthorized", UNAUTHORIZED),
        }
        self._not_found = response(b"404 Not Found", NOT_FOUND)
        self._expected = b"Bearer " + token
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._authorized = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._authorized = b"", False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self._authorized = value == self._expected

    def on_message_complete(self) -> None:
        known = self._url == b"/user" and self._parser.get_method() == b"GET"
        answer = self._answers[self._authorized] if known else self._not_found
        if self._transport is not None:
            self._transport.write(answer)


async def serve(port: int, token: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: GitHubUser(token.encode()), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, os.environ["LOOPBACK_PROVIDER_TOKEN"]))


if __name__ == "__main__":
    main()
