"""Benchmark: the same ``echo`` tool call direct to mcp_server and through the gateway.

Run against a live stack in another terminal, started with a per-user limit that does not stop
the benchmark (it is still checked on every call), from the same directory::

    GATEHOUSE_USER_RATE_LIMIT=100000000/minute gatehouse up
    python -m loadtests.bench_forwarding [--seconds 10] [--concurrency 16]

It signs its own internal assertion with ``.gatehouse/internal_assertion.pem`` for the direct
path and a development token for the gateway path; both paths get byte-identical MCP requests
(protocol 2026-07-28, JSON responses) from the same client at the same concurrency. Prints
requests/s, p50 and p99 for both, their ratio, and the latency the gateway adds at one request
in flight.

The two paths are measured in alternating rounds (direct, gateway, direct, ...) and the
median round is reported, so drift in what else the machine is doing affects both alike.

With tracing on: start the stack with every call sampled and exported to a loopback receiver,
then run the benchmark as above (``loadtests/bench_overhead.py --tracing both`` measures both
modes itself, starting its own processes)::

    python -m loadtests.otlp_sink --port 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_TRACES_SAMPLER=always_on \\
        GATEHOUSE_USER_RATE_LIMIT=100000000/minute gatehouse up
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.cli import devissuer
from oauth.assertion import AssertionSigner, CallerIdentity
from oauth.keys import load_private_key

BODY = json.dumps({
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "echo",
        "arguments": {"text": "benchmark"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}).encode()
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}


@dataclass(frozen=True)
class Result:
    label: str
    concurrency: int
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        return (f"{self.label:<9} c={self.concurrency:<3} {self.rps:8.0f} req/s   "
                f"p50 {self.percentile(0.50):6.2f} ms   p99 {self.percentile(0.99):6.2f} ms   "
                f"({self.requests} calls)")


async def run(
    url: str, token: Callable[[], str], concurrency: int, seconds: float, label: str
) -> Result:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call() -> float:
            headers = {**HEADERS, "Authorization": "Bearer " + token()}
            started = time.perf_counter()
            async with http.post(url, data=BODY, headers=headers) as resp:
                payload = await resp.read()
            if resp.status == 429:
                raise SystemExit("the per-user limit answered 429: start the stack with "
                                 "GATEHOUSE_USER_RATE_LIMIT=100000000/minute")
            if resp.status != 200 or b'"benchmark"' not in payload:
                raise RuntimeError(f"{label}: unexpected answer {resp.status}: {payload[:200]!r}")
            return time.perf_counter() - started

        for _ in range(max(50, concurrency * 5)):  # warm pools, caches and JIT-free paths alike
            await call()
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                latencies.append(await call())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(label, concurrency, len(latencies), elapsed, latencies)


class AssertionSource:
    """Re-signs the direct path's assertion well before it expires."""

    def __init__(self, signer: AssertionSigner) -> None:
        self._signer = signer
        self._token = ""
        self._signed_at = 0.0

    def __call__(self) -> str:
        if time.monotonic() - self._signed_at > 10:
            caller = CallerIdentity("bench-org", "bench-user", uuid.uuid4().hex, ("member",))
            self._token = self._signer.sign(caller)
            self._signed_at = time.monotonic()
        return self._token


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--mcp-server", default="http://127.0.0.1:8001")
    parser.add_argument("--data-dir", type=Path, default=Path(".gatehouse"))
    parser.add_argument("--seconds", type=float, default=3, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    signer = AssertionSigner(
        load_private_key((args.data_dir / "internal_assertion.pem").read_bytes()), lifetime=30
    )
    user_token = devissuer.mint(
        devissuer.ensure_key(args.data_dir / "dev_issuer.pem"),
        issuer=devissuer.dev_issuer(args.gateway),
        audience=args.gateway.rstrip("/") + "/mcp",
        org="bench-org",
        user="bench-user",
        roles=["member"],
    )
    direct_url, gateway_url = args.mcp_server + "/mcp", args.gateway + "/mcp"

    paths = (("direct", direct_url, AssertionSource(signer)),
             ("gateway", gateway_url, lambda: user_token))
    medians: dict[tuple[str, int], Result] = {}
    for concurrency in (1, args.concurrency):
        rounds: dict[str, list[Result]] = {"direct": [], "gateway": []}
        for _ in range(args.rounds):
            for label, url, token in paths:
                rounds[label].append(await run(url, token, concurrency, args.seconds, label))
        for label, results in rounds.items():
            median = sorted(results, key=lambda r: r.rps)[len(results) // 2]
            medians[(label, concurrency)] = median
            print(median.line(), flush=True)

    c = args.concurrency
    ratio = medians[("gateway", c)].rps / medians[("direct", c)].rps
    added = medians[("gateway", 1)].percentile(0.5) - medians[("direct", 1)].percentile(0.5)
    print(f"\nthroughput ratio at c={c}: {ratio:.2f} (target >= 0.60)")
    print(f"latency added at c=1, p50: {added:.2f} ms (target <= 1.00)")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
