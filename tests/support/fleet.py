"""A ``gatehouse up --replicas N`` fleet for tests, a steady load through it, and raw streams.

:func:`running_fleet` starts ``up`` with embedded PostgreSQL and Redis in a scratch directory
(no ``.env`` of the checkout applies, no ``GATEHOUSE_*`` of the caller's environment leaks in
unless passed), waits for the banner, and on exit stops it with SIGINT and makes sure every
process it started is gone (signalled by PID, never by name). :class:`Fleet` knows each
replica's PID (``up``'s PID files), port (the generated ``haproxy.cfg``) and HAProxy's
statistics. :func:`steady_load` runs ``/v1/sessions`` GETs and MCP ``echo`` calls through the
balancer until told to stop and counts every outcome. :func:`open_count_stream` sends an MCP
``count`` call (an SSE response) on a raw connection, so a test knows the request has left
before it signals anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import httpx

from gateway.cli import devissuer
from gateway.cli.fleet import server_stats
from tests.support.processes import free_port

GATEHOUSE = [sys.executable, "-m", "gateway"]
START_SECONDS = 120
UNLIMITED = "100000000/minute"
# A steady load from one user is not what these tests are about.
NO_LIMITS = {"GATEHOUSE_USER_RATE_LIMIT": UNLIMITED, "GATEHOUSE_USER_TOOL_RATE_LIMIT": UNLIMITED}
MODERN = "2026-07-28"


@dataclass
class Fleet:
    work: Path
    up: subprocess.Popen[bytes]
    port: int  # HAProxy's public port
    mcp_port: int

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.work / "up.log").read_text(errors="replace")

    def pid(self, name: str) -> int:
        return int((self.data_dir / f"{name}.pid").read_text())

    def ports(self) -> dict[str, int]:
        """Each replica's loopback port, from HAProxy's configuration."""
        text = (self.data_dir / "haproxy.cfg").read_text()
        servers = re.finditer(r"server (\S+) 127\.0\.0\.1:(\d+) check", text)
        return {m[1]: int(m[2]) for m in servers}

    def stats_url(self) -> str:
        text = (self.data_dir / "haproxy.cfg").read_text()
        port = re.search(r"listen stats\n    bind 127\.0\.0\.1:(\d+)", text)
        assert port, text
        return f"http://127.0.0.1:{port[1]}/stats"

    def stats(self) -> dict[str, dict[str, str]]:
        return {row["svname"]: row for row in server_stats(self.stats_url())}

    def admin_dsn(self) -> str:
        line = next(ln for ln in self.log().splitlines() if "embedded PostgreSQL ready" in ln)
        return line.rsplit(": ", 1)[1]

    def token(self, org: str, user: str) -> str:
        return subprocess.run(
            [*GATEHOUSE, "--data-dir", str(self.data_dir), "token", "--org", org,
             "--user", user], cwd=self.work, env=clean_env(), capture_output=True, text=True,
            check=True, timeout=60).stdout.strip()

    def mint(self, org: str, user: str) -> str:
        """A development token minted in-process (``gatehouse token`` costs a Python start)."""
        key = devissuer.ensure_key(self.data_dir / "dev_issuer.pem")
        return devissuer.mint(key, issuer=devissuer.dev_issuer(self.url),
                              audience=self.url + "/mcp", org=org, user=user, roles=["member"])

    def status(self, name: str) -> str:
        """HAProxy's view of one replica: ``UP``, ``DOWN``, ... (empty: stats unreachable)."""
        return self.stats().get(name, {}).get("status", "")

    def processes(self) -> dict[str, int]:
        """Every process this fleet runs: replicas, HAProxy, embedded Redis and PostgreSQL."""
        found = {p.stem: int(p.read_text()) for p in self.data_dir.glob("*.pid")}
        for name, path in (("redis", self.data_dir / "redis" / "redis.pid"),
                           ("postgres", self.data_dir / "postgres" / "postmaster.pid")):
            with contextlib.suppress(OSError, ValueError):
                found[name] = int(path.read_text().split()[0])
        return found


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def kill_and_wait(pid: int, signum: int = signal.SIGKILL) -> float:
    """Signal ``pid``; the moment (``time.monotonic()``) it has exited. A killed process dies
    some milliseconds after ``kill()`` returns (later still on busy cores): until then it
    still takes requests, so this, not the signal, is when being in flight on it ends."""
    fd = os.pidfd_open(pid)
    watching = threading.Event()

    def exited() -> float:
        watching.set()
        select.select([fd], [], [])
        return time.monotonic()

    try:
        waiter = asyncio.ensure_future(asyncio.to_thread(exited))
        await asyncio.to_thread(watching.wait)
        os.kill(pid, signum)
        return await asyncio.wait_for(waiter, 30)
    finally:
        os.close(fd)


@contextlib.contextmanager
def running_fleet(replicas: int = 2, env: dict[str, str] | None = None) -> Iterator[Fleet]:
    work = Path(tempfile.mkdtemp(prefix="gatehouse-fleet-"))  # outside pytest's tmp root: the
    # embedded cluster's user must traverse it
    port, mcp_port = free_port(), free_port()
    with (work / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [*GATEHOUSE, "--data-dir", str(work / "data"), "up", "--replicas", str(replicas),
             "--gateway-port", str(port), "--mcp-port", str(mcp_port)],
            cwd=work, env=clean_env() | NO_LIMITS | (env or {}), stdout=log,
            stderr=subprocess.STDOUT)
    fleet = Fleet(work, up, port, mcp_port)
    started: dict[str, int] = {}
    try:
        deadline = time.monotonic() + START_SECONDS
        while "Press Ctrl-C to stop." not in fleet.log():
            assert up.poll() is None, fleet.log()[-4000:]
            assert time.monotonic() < deadline, fleet.log()[-4000:]
            time.sleep(0.1)
        started = fleet.processes()
        yield fleet
    finally:
        _stop(fleet, started)
        shutil.rmtree(work, ignore_errors=True)


def _stop(fleet: Fleet, started: dict[str, int]) -> None:
    if fleet.up.poll() is None:
        fleet.up.send_signal(signal.SIGINT)
        try:
            fleet.up.wait(30)
        except subprocess.TimeoutExpired:
            fleet.up.kill()
            fleet.up.wait()
    for pid in {**started, **fleet.processes()}.values():  # a test failed half-way: no leftovers
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Load:
    ok: int = 0
    tool_calls: int = 0  # echo calls sent (each one is audited as tool.call)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0


def echo_request(text: str, request_id: int) -> dict[str, object]:
    return tool_request("echo", {"text": text}, request_id)


def tool_request(name: str, arguments: dict[str, object], request_id: int
                 ) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments,
                       "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                 "io.modelcontextprotocol/clientCapabilities": {}}}}


def mcp_headers(token: str, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "MCP-Protocol-Version": MODERN,
            "Accept": "application/json, text/event-stream", "Mcp-Method": "tools/call",
            "Mcp-Name": name}


def echoed(response: httpx.Response) -> str:
    """The text of an echo result, from a JSON or an SSE answer."""
    body = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        body = [ln[5:] for ln in body.splitlines() if ln.startswith("data:")][-1]
    return str(json.loads(body)["result"]["content"][0]["text"])


async def steady_load(url: str, token: str, stop: asyncio.Event, load: Load,
                      workers: int = 4) -> None:
    """Each worker alternates a session listing and an echo call until ``stop`` is set."""
    async with httpx.AsyncClient(base_url=url, timeout=15,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        await asyncio.gather(*(_worker(http, token, stop, load, w) for w in range(workers)))


async def _worker(http: httpx.AsyncClient, token: str, stop: asyncio.Event, load: Load,
                  worker: int) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        text = f"w{worker}-{n}"
        started = time.monotonic()
        try:
            listed = await http.get("/v1/sessions")
            _check(load, listed, "GET /v1/sessions", None)
            load.tool_calls += 1
            called = await http.post("/mcp", json=echo_request(text, n),
                                     headers=mcp_headers(token, "echo"))
            _check(load, called, "echo", text)
        except httpx.HTTPError as exc:
            load.failures.append(f"{type(exc).__name__}: {exc}")
        load.slowest = max(load.slowest, time.monotonic() - started)


def _check(load: Load, response: httpx.Response, what: str, echo: str | None) -> None:
    try:
        good = response.status_code == 200 and (echo is None or echoed(response) == echo)
    except (ValueError, LookupError):  # not the JSON-RPC result expected
        good = False
    if good:
        load.ok += 1
    else:
        load.failures.append(f"{what}: {response.status_code} {response.text[:200]}")


# -- a streamed tool call on a raw connection ---------------------------------------------------


async def open_count_stream(port: int, token: str, to: int = 3
                            ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send ``count`` (2025-11-25: an SSE answer with progress) to ``port``; returns once the
    whole request is written, so a signal sent after it finds the request on its way."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "count", "arguments": {"to": to},
                                  "_meta": {"progressToken": "p"}}}).encode()
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(method="POST", target="/mcp", headers=[
        ("Host", f"127.0.0.1:{port}"), ("Authorization", f"Bearer {token}"),
        ("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", "2025-11-25"), ("Content-Length", str(len(body))),
        ("Connection", "close")])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connection.send(request) + connection.send(h11.Data(data=body))
                 + connection.send(h11.EndOfMessage()))
    await writer.drain()
    return reader, writer


async def read_count_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                            ) -> tuple[int, list[dict[str, object]]]:
    """The status and the SSE events of a stream opened by :func:`open_count_stream`."""
    raw = await reader.read()  # Connection: close: the server ends it after the response
    writer.close()
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="POST", target="/mcp", headers=[("Host", "x"),
                                                                       ("Content-Length", "0")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(raw)
    connection.receive_data(b"")
    status, body = 0, b""
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    events = [json.loads(ln[5:]) for ln in body.decode().splitlines() if ln.startswith("data:")]
    return status, events
