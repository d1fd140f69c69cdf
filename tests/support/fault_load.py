"""A steady load that records every request, and the table a fault test prints about it.

Each worker of :func:`recorded_load` repeats: list sessions, an MCP ``echo`` call, a session
create. Every answer becomes an :class:`Outcome` (when it started and ended, status, the
problem's ``code`` or the JSON-RPC error), and every create acknowledged with a 201 is kept, so
a test can check afterwards that the database holds each one. :class:`Window` turns the
outcomes around a fault into the small table the fault tests print: requests, failures by
status and code, slowest request, seconds from the end of the fault to the last failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import httpx

from tests.support.fleet import echo_request, echoed, mcp_headers

WORKERS = 4
CLIENT_TIMEOUT = 30.0  # a request slower than this is reported as a ReadTimeout, not waited for


@dataclass(frozen=True)
class Outcome:
    kind: str  # list | echo | create
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer
    code: str  # the problem's code, "jsonrpc <code>", "tool_error" or the exception's name
    ok: bool
    retry_after: bool = False

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Recorder:
    outcomes: list[Outcome] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # acknowledged session id -> name
    pending: dict[int, tuple[str, float]] = field(default_factory=dict)  # in flight: kind, start

    def stuck(self, kind: str, seconds: float) -> bool:
        """Whether a ``kind`` request has been waiting for its answer for ``seconds``."""
        now = time.monotonic()
        return any(k == kind and now - s >= seconds for k, s in self.pending.values())

    def ok_since(self, moment: float) -> int:
        return sum(o.ok for o in self.outcomes if o.started >= moment)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


@contextlib.asynccontextmanager
async def recorded_load(url: str, token: str, workers: int = WORKERS
                        ) -> AsyncIterator[Recorder]:
    """Load ``url`` until the block ends; then every worker must finish its request (none
    may hang past the client's timeout)."""
    recorder, stop = Recorder(), asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        tasks = [asyncio.create_task(_worker(http, token, stop, recorder, w))
                 for w in range(workers)]
        try:
            yield recorder
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), CLIENT_TIMEOUT + 5)


async def until_served(recorder: Recorder, count: int, since: float | None = None,
                       seconds: float = 30.0) -> None:
    """Wait until ``count`` requests started at ``since`` (default: now) have succeeded."""
    start = time.monotonic() if since is None else since
    deadline = time.monotonic() + seconds
    while recorder.ok_since(start) < count:
        assert time.monotonic() < deadline, f"fewer than {count} successes in {seconds}s"
        await asyncio.sleep(0.05)


async def _worker(http: httpx.AsyncClient, token: str, stop: asyncio.Event,
                  recorder: Recorder, worker: int) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        await _request(recorder, "list", http.get("/v1/sessions", params={"limit": 5}))
        text = f"w{worker}-{n}"
        await _request(recorder, "echo", http.post(
            "/mcp", json=echo_request(text, n), headers=mcp_headers(token, "echo")), text)
        name = f"fault-{uuid.uuid4().hex[:12]}"
        await _request(recorder, "create", http.post("/v1/sessions", json={"name": name}), name)


async def _request(recorder: Recorder, kind: str, send: Awaitable[httpx.Response],
                   expect: str | None = None) -> None:
    started = time.monotonic()  # the request is sent only once awaited
    recorder.pending[id(send)] = (kind, started)
    try:
        response = await send
    except httpx.HTTPError as exc:
        recorder.outcomes.append(Outcome(kind, started, time.monotonic(), 0,
                                         type(exc).__name__, False))
        return
    finally:
        del recorder.pending[id(send)]
    ended = time.monotonic()
    ok, code = _judge(kind, response, expect)
    if ok and kind == "create":
        recorder.created[response.json()["id"]] = str(expect)
    recorder.outcomes.append(Outcome(kind, started, ended, response.status_code, code, ok,
                                     "retry-after" in response.headers))


def _judge(kind: str, response: httpx.Response, expect: str | None) -> tuple[bool, str]:
    wanted = 201 if kind == "create" else 200
    try:
        if response.status_code != wanted:
            return False, str(_body(response).get("code", ""))
        if kind == "echo":
            error = _jsonrpc_error(response)
            if error:
                return False, error
            return echoed(response) == expect, ""
        return True, ""
    except (ValueError, LookupError, TypeError):
        return False, "unreadable"


def _body(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _jsonrpc_error(response: httpx.Response) -> str:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = [ln[5:] for ln in text.splitlines() if ln.startswith("data:")][-1]
    message = json.loads(text)
    if "error" in message:
        return f"jsonrpc {message['error'].get('code')}"
    return "tool_error" if message.get("result", {}).get("isError") else ""


# -- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The outcomes of one scenario; ``fault_end``: when the fault ended (process killed,
    dependency back)."""

    title: str
    outcomes: list[Outcome]
    fault_end: float

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def slowest(self) -> Outcome | None:
        return max(self.outcomes, key=lambda o: o.seconds, default=None)

    @property
    def recovered_after(self) -> float:
        """Seconds from the end of the fault to the end of the last failed request (0: none
        failed after it)."""
        return max([0.0, *(o.ended - self.fault_end for o in self.failures)])

    def by_status_and_code(self) -> Counter[tuple[int, str]]:
        return Counter((o.status, o.code) for o in self.failures)

    def table(self) -> str:
        slowest = self.slowest
        slow = f"{slowest.seconds:.2f} s ({slowest.kind})" if slowest else "-"
        lines = [
            f"== {self.title} ==",
            f"{'requests':>9} {'ok':>7} {'failed':>7}  {'slowest':<18} recovered after",
            f"{len(self.outcomes):>9} {len(self.outcomes) - len(self.failures):>7} "
            f"{len(self.failures):>7}  {slow:<18} {self.recovered_after:.2f} s",
        ]
        for (status, code), count in sorted(self.by_status_and_code().items()):
            lines.append(f"  failed: {count:>5} x {status or 'no answer'} {code}")
        return "\n".join(lines)
