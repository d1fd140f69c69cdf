"""Benchmark: a provider tool call (``github_whoami``) against ``echo``, direct to mcp_server.

The provider tool takes the per-(user, tool), per-(organisation, provider) and per-provider
rate limits (Redis), loads and decrypts the user's token (PostgreSQL under RLS, AES-GCM), asks
the provider's circuit breaker (Redis) and calls a loopback provider: the GitHub stand-in,
run as its own process so it does not share this client's interpreter. Self-contained: it
creates a scratch database (``GATEHOUSE_TEST_ADMIN_DATABASE_URL``, default the local
postgres superuser) and uses a Redis database that it may write to::

    python -m loadtests.bench_provider_tool [--seconds 3] [--rounds 5] [--concurrency 16]

Both tools are called with byte-identical framing (protocol 2026-07-28, JSON responses) in
alternating rounds; the median round is reported, with the CPU time mcp_server spent per call
(steadier than latency on a shared machine). Target: ≤ 0.5 ms added at p50, c=1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import psutil

from loadtests.bench_forwarding import AssertionSource, Result
from oauth.assertion import AssertionSigner
from oauth.keyring import Keyring, generate_entry
from oauth.keys import ensure_private_key_file, public_pem
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import QUERIES, create_pool, rls_transaction
from tests.support.databases import Database, test_database
from tests.support.processes import Server, free_port, start_uvicorn, wait_healthy

ORG, USER = "bench-org", "bench-user"


def body(tool: str, arguments: dict[str, str]) -> bytes:
    return json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}},
    }).encode()


CASES = {
    "echo": (body("echo", {"text": "benchmark"}), b'"benchmark"'),
    "github": (body("github_whoami", {}), b'"login"'),
}


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time the processes have used so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


@dataclass
class Round:
    result: Result
    server_cpu_ms: float  # mcp_server CPU per call
    provider_cpu_ms: float  # the loopback provider's CPU per call


async def run(url: str, token: AssertionSource, case: str, concurrency: int,
              seconds: float, pids: tuple[int, int]) -> Round:
    payload, marker = CASES[case]
    tool = "echo" if case == "echo" else "github_whoami"
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def call() -> float:
            started = time.perf_counter()
            async with http.post(url, data=payload,
                                 headers={**headers, "Authorization": "Bearer " + token()}) as r:
                answer = await r.read()
            if r.status != 200 or marker not in answer or b'"isError":true' in answer:
                raise RuntimeError(f"{case}: unexpected answer {r.status}: {answer[:300]!r}")
            return time.perf_counter() - started

        for _ in range(max(50, concurrency * 5)):
            await call()
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                latencies.append(await call())

        started, server, provider = time.perf_counter(), cpu_seconds(pids[0]), cpu_seconds(pids[1])
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result = Result(case, concurrency, len(latencies), time.perf_counter() - started,
                        latencies)
        calls = len(latencies)
        return Round(result, (cpu_seconds(pids[0]) - server) * 1000 / calls,
                     (cpu_seconds(pids[1]) - provider) * 1000 / calls)


async def connect_user(db: Database, keys: str) -> str:
    """Provision the benchmark user and store a GitHub connection; returns its token."""
    pool = await create_pool(db.app_url, min_size=1, max_size=2)
    try:
        async with rls_transaction(pool, _Who()) as conn:
            await conn.fetchval(QUERIES["provision_principal"], ORG, USER, ["member"])
        token = f"gho_{secrets.token_hex(16)}"
        bundle = TokenBundle(token, None, datetime.now(UTC) + timedelta(days=1), ("repo",))
        await TokenStore(pool, Keyring.parse(keys)).save(_Who(), "github", bundle)
    finally:
        await pool.close()
    return token


class _Who:
    org_id, user_id = ORG, USER


def start_standin(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.github_standin", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=(work / "standin.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/_standin/requests", timeout=0.5)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the GitHub stand-in did not start")


async def measure(server: Server, standin: int, signer: AssertionSigner,
                  args: argparse.Namespace) -> None:
    url, source = server.url + "/mcp", AssertionSource(signer)
    pids = (server.process.pid, standin)
    medians: dict[tuple[str, int], Round] = {}
    for concurrency in (1, args.concurrency):
        rounds: dict[str, list[Round]] = {"echo": [], "github": []}
        for _ in range(args.rounds):
            for case in rounds:
                rounds[case].append(
                    await run(url, source, case, concurrency, args.seconds, pids))
        for case, results in rounds.items():
            median = sorted(results, key=lambda r: r.result.percentile(0.5))[len(results) // 2]
            medians[(case, concurrency)] = median
            cpu = statistics.median(r.server_cpu_ms for r in results)
            print(f"{median.result.line()}   mcp_server CPU {cpu:.3f} ms/call", flush=True)
    for c in (1, args.concurrency):
        echo, github = medians[("echo", c)], medians[("github", c)]
        added = github.result.percentile(0.5) - echo.result.percentile(0.5)
        print(f"added over echo at c={c}, p50: {added:.2f} ms"
              + (" (target <= 0.50)" if c == 1 else ""))
    echo_cpu = medians[("echo", 1)].server_cpu_ms
    github_cpu = medians[("github", 1)].server_cpu_ms
    print(f"mcp_server CPU added per call at c=1: {github_cpu - echo_cpu:.3f} ms "
          f"(the loopback provider itself: {medians[('github', 1)].provider_cpu_ms:.3f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get(
        "GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--seconds", type=float, default=3, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("GATEHOUSE_TEST_ADMIN_DATABASE_URL",
                          "postgresql://postgres@127.0.0.1/postgres")
    work = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    private = ensure_private_key_file(work / "internal.pem")
    (work / "internal.pub").write_bytes(public_pem(private))
    keys = generate_entry("bench")
    standin, standin_url = start_standin(work)
    try:
        with test_database() as db:
            token = asyncio.run(connect_user(db, keys))
            httpx.post(standin_url + "/_standin/tokens",
                       json={"token": token, "login": USER, "scopes": "repo, read:user"})
            server = start_uvicorn("mcp_server.app:create_app", {
                "GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(work / "internal.pub"),
                "GATEHOUSE_DATABASE_URL": db.app_url, "GATEHOUSE_REDIS_URL": args.redis_url,
                "GATEHOUSE_TOKEN_KEYS": keys,
                "GATEHOUSE_RESILIENCE_NAMESPACE": f"bench-{secrets.token_hex(4)}",
                "GATEHOUSE_USER_TOOL_RATE_LIMIT": "100000000/minute",
                "GATEHOUSE_ORG_PROVIDER_RATE_LIMIT": "100000000/minute",
                "GATEHOUSE_PROVIDER_RATE_LIMIT": "100000000/minute",
                "GATEHOUSE_PROVIDERS": json.dumps({"github": {
                    "client_id": "bench", "client_secret": "bench", "api_base_url": standin_url}}),
            }, work, "mcp_server")
            try:
                wait_healthy(server)
                asyncio.run(measure(server, standin.pid, AssertionSigner(private), args))
            finally:
                server.stop()
    finally:
        standin.terminate()
        standin.wait(10)


if __name__ == "__main__":
    main()
