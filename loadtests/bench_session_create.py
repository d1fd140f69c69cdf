"""Benchmark: ``POST /v1/sessions`` on a busy gateway (issue 14 item 5).

In a 50-user Locust run the ramp-up's creates took a second while every other request stayed
under 90 ms: each create's database round trips wait their turn on a busy event loop while the
organisation's creation lock is held. This reproduces that shape without Locust: a background
load of ``GET /v1/sessions`` and MCP ``echo`` calls (``--background`` users alternating them,
``--think`` seconds apart) runs throughout, while rounds of ``--creates`` creates over
``--orgs`` organisations arrive at ``--rate`` per second (as Locust's ramp-up spawns users).
Reports create
p50/p95/max beside the background requests' p95 in the same window, and their ratio (issue
goal: create p95 within 3x the others').

Self-contained like :mod:`loadtests.bench_overhead`: a scratch database
(``GATEHOUSE_TEST_ADMIN_DATABASE_URL``), a Redis database it may write to
(``GATEHOUSE_TEST_REDIS_URL`` or ``--redis-url``), mcp_server and the gateway started with the
command ``gatehouse up`` uses, stopped at the end::

    python -m loadtests.bench_session_create [--rounds 3] [--background 32] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from gateway.cli import devissuer
from loadtests.bench_forwarding import BODY, HEADERS
from loadtests.bench_overhead import Keys, make_keys, stack
from tests.support.databases import test_database
from tests.support.processes import Server

GOAL_RATIO = 3.0


@dataclass
class Samples:
    """Latencies in seconds, and every status that was not the expected one."""

    latencies: list[float] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    def figures(self) -> dict[str, Any]:
        return {"count": len(self.latencies), "p50_ms": self.percentile(0.5),
                "p95_ms": self.percentile(0.95),
                "max_ms": max(self.latencies, default=0.0) * 1000,
                "unexpected_statuses": sorted(self.unexpected)}


@dataclass(frozen=True)
class Caller:
    token: str


def tokens(keys: Keys, gateway: Server, prefix: str, orgs: int, count: int) -> list[Caller]:
    """``count`` members spread round-robin over ``orgs`` organisations."""
    key = devissuer.ensure_key(keys.dev_issuer)
    return [Caller(devissuer.mint(
        key, issuer=gateway.url + devissuer.ISSUER_PATH, audience=gateway.url + "/mcp",
        org=f"bench-org-{n % orgs}", user=f"{prefix}-{n}", roles=["member"]))
        for n in range(count)]


async def timed(samples: Samples, expected: int, request: Callable[[], Awaitable[int]]) -> None:
    started = time.perf_counter()
    status = await request()
    samples.latencies.append(time.perf_counter() - started)
    if status != expected:
        samples.unexpected.append(status)


def requests(http: aiohttp.ClientSession, base: str) -> dict[str, Callable[..., Any]]:
    def auth(caller: Caller) -> dict[str, str]:
        return {"Authorization": "Bearer " + caller.token}

    async def create(caller: Caller) -> int:
        async with http.post(base + "/v1/sessions", json={"name": "bench"},
                             headers=auth(caller)) as resp:
            await resp.read()
            return resp.status

    async def listing(caller: Caller) -> int:
        async with http.get(base + "/v1/sessions?limit=10", headers=auth(caller)) as resp:
            await resp.read()
            return resp.status

    async def echo(caller: Caller) -> int:
        async with http.post(base + "/mcp", data=BODY,
                             headers={**HEADERS, **auth(caller)}) as resp:
            payload = await resp.read()
            return resp.status if b'"benchmark"' in payload else -resp.status

    return {"create": create, "list": listing, "echo": echo}


async def background(calls: dict[str, Callable[..., Any]], callers: list[Caller],
                     args: argparse.Namespace, stop: asyncio.Event,
                     out: dict[str, Samples]) -> None:
    """``args.background`` users, each alternating a listing and an echo with ``args.think``
    seconds between requests (as Locust users think)."""
    async def worker(n: int) -> None:
        i = n
        while not stop.is_set():
            kind, caller = ("list", "echo")[i % 2], callers[i % len(callers)]
            await timed(out[kind], 200, partial(calls[kind], caller))
            i += args.background
            await asyncio.sleep(args.think)

    await asyncio.gather(*(worker(n) for n in range(args.background)))


async def create_round(calls: dict[str, Callable[..., Any]], creators: list[Caller],
                       rate: float, out: Samples) -> None:
    """One create per creator, started ``1/rate`` seconds apart, as users spawn."""
    pending = []
    for caller in creators:
        pending.append(asyncio.create_task(timed(out, 201, partial(calls["create"], caller))))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*pending)


async def measure(gateway: Server, keys: Keys, args: argparse.Namespace) -> dict[str, Any]:
    creators = tokens(keys, gateway, "creator", args.orgs, args.creates)
    others = tokens(keys, gateway, "reader", args.orgs, args.background * 2)
    connector = aiohttp.TCPConnector(limit=args.background + args.creates)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        calls = requests(http, gateway.url)
        warm = Samples()  # provisions every user and warms pools and caches
        for caller in creators + others:
            await timed(warm, 200, partial(calls["list"], caller))
            await timed(warm, 200, partial(calls["echo"], caller))
        if warm.unexpected:
            raise SystemExit(f"warm-up answered {sorted(set(warm.unexpected))}")
        out = {"create": Samples(), "list": Samples(), "echo": Samples()}
        stop = asyncio.Event()
        load = asyncio.create_task(background(calls, others, args, stop, out))
        await asyncio.sleep(args.settle)
        started = time.perf_counter()
        for _ in range(args.rounds):
            await create_round(calls, creators, args.rate, out["create"])
            await asyncio.sleep(args.settle)
        stop.set()
        await load
        elapsed = time.perf_counter() - started
    others_all = Samples(out["list"].latencies + out["echo"].latencies,
                         out["list"].unexpected + out["echo"].unexpected)
    result = {name: s.figures() for name, s in out.items()}
    result["others"] = others_all.figures()
    result["background_rps"] = len(others_all.latencies) / (elapsed + args.settle)
    result["ratio_create_p95_over_others_p95"] = (
        result["create"]["p95_ms"] / max(result["others"]["p95_ms"], 1e-9))
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"load average at start: {args.load_at_start}",
             f"background: {args.background} users, {args.think:g} s think time (GET "
             f"/v1/sessions and MCP echo), "
             f"{result['background_rps']:.0f} requests/s; creates: {args.rounds} rounds of "
             f"{args.creates} over {args.orgs} organisations at {args.rate:g}/s",
             f"{'request':<8} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  unexpected"]
    for name in ("create", "list", "echo", "others"):
        f = result[name]
        lines.append(f"{name:<8} {f['count']:>6} {f['p50_ms']:8.1f} {f['p95_ms']:8.1f} "
                     f"{f['max_ms']:8.1f}  {f['unexpected_statuses'] or '-'}")
    ratio = result["ratio_create_p95_over_others_p95"]
    lines.append(f"create p95 / others' p95: {ratio:.2f} (goal <= {GOAL_RATIO:g})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=50, help="creates per round")
    parser.add_argument("--orgs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="creates started per second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--background", type=int, default=50, help="background users")
    parser.add_argument("--think", type=float, default=0.1, help="seconds each background "
                        "user waits between its requests")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of background "
                        "load alone before and after each round")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("--redis-url", default=os.environ.get(
        "GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    os.environ.setdefault("GATEHOUSE_TEST_ADMIN_DATABASE_URL",
                          "postgresql://postgres@127.0.0.1/postgres")
    keys = make_keys(Path(tempfile.mkdtemp(prefix="gatehouse-bench-create-")))
    with test_database() as db, stack(db, args.redis_url, keys, None) as (_, gateway):
        budget = args.rounds * (args.creates / args.rate + args.settle + 60) + 300
        result = uvloop.run(asyncio.wait_for(measure(gateway, keys, args), budget))
    print(report(result, args), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        json.dump({"load_at_start": args.load_at_start, **vars(args), **result}, sys.stdout,
                  indent=2, default=str)
        print()


if __name__ == "__main__":
    main()
