"""Benchmark: where each microsecond of a tool call goes (issue 14).

The same ``echo`` call, with the same MCP framing (protocol 2026-07-28, JSON responses), to three
targets: a bare FastMCP server with the same async tool (:mod:`loadtests.bare_fastmcp`), our
mcp_server direct (with a valid internal assertion), and through the gateway (a development
token, the per-user limit checked on every call but set too high to refuse). For each target:
requests/s at 16 in flight, p50/p99 at one in flight, and the CPU time (user + system, from
``/proc`` via psutil, not wall time) each process spends per call: this client, the gateway,
mcp_server, the bare server and, with tracing on, the OTLP receiver.

The targets are measured in short alternating slices (``--slice`` seconds each, the order
rotating every round), with every process's CPU time read before and after each slice, so the
drift in this machine's speed lands on all targets alike. A slice's throughput counts the calls
that completed within it; its CPU per call divides by every call it made (those finishing after
the deadline included).

Self-contained: it creates a scratch database (``GATEHOUSE_TEST_ADMIN_DATABASE_URL``, default
the local postgres superuser) and uses a Redis database it may write to
(``GATEHOUSE_TEST_REDIS_URL`` or ``--redis-url``), starts every process itself on free loopback
ports with the command ``gatehouse up`` uses, and stops them all at the end::

    python -m loadtests.bench_overhead [--seconds 5] [--tracing off|on|both] [--json]

``--tracing both`` starts mcp_server and the gateway twice: without any ``OTEL_*`` variable,
then with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a loopback receiver
(:mod:`loadtests.otlp_sink`) and ``OTEL_TRACES_SAMPLER=always_on``. The bare server is never
traced: it is the baseline. ``--json`` prints one JSON document on stdout (the tables then go
to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

from gateway.cli import devissuer
from loadtests.bench_forwarding import BODY, HEADERS, AssertionSource, Result
from loadtests.bench_provider_tool import cpu_seconds
from oauth.assertion import AssertionSigner
from oauth.keyring import generate_entry
from oauth.keys import ensure_private_key_file, public_pem
from tests.support.databases import Database, test_database
from tests.support.processes import Server, free_port, wait_healthy

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("bare", "direct", "gateway")
PROCESSES = ("client", "gateway", "mcp_server", "bare", "otlp_sink")
# The processes a target's call runs through; the others' CPU in its slices is idle noise.
INVOLVED = {"bare": {"client", "bare"}, "direct": {"client", "mcp_server", "otlp_sink"},
            "gateway": {"client", "gateway", "mcp_server", "otlp_sink"}}
MARKER = b'"benchmark"'
ORG, USER = "bench-org", "bench-user"
LIMIT = "100000000/minute"  # checked on every call, never reached


@dataclass
class Target:
    name: str
    url: str
    token: Callable[[], str] | None  # None: no Authorization header (the bare server)


@dataclass
class Tally:
    """One target at one concurrency, summed over its slices."""

    calls: int = 0  # every call, for CPU per call
    window_calls: int = 0  # completed before their slice's deadline, for throughput
    window_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: Counter[str] = field(default_factory=Counter)  # seconds, per process

    def result(self, name: str, concurrency: int) -> Result:
        return Result(name, concurrency, self.window_calls, self.window_seconds, self.latencies)

    def cpu_us_per_call(self) -> dict[str, float]:
        return {p: self.cpu[p] * 1e6 / max(1, self.calls) for p in PROCESSES}


# -- the client --------------------------------------------------------------------------------


async def call(http: aiohttp.ClientSession, target: Target) -> None:
    headers = HEADERS if target.token is None else {
        **HEADERS, "Authorization": "Bearer " + target.token()}
    async with http.post(target.url, data=BODY, headers=headers) as resp:
        payload = await resp.read()
    if resp.status == 429:
        raise SystemExit("the per-user limit answered 429")
    if resp.status != 200 or MARKER not in payload:
        raise RuntimeError(f"{target.name}: unexpected answer {resp.status}: {payload[:300]!r}")


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


async def run_slice(http: aiohttp.ClientSession, target: Target, concurrency: int,
                    seconds: float, tally: Tally, pids: dict[str, int]) -> None:
    before = cpu_now(pids)
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await call(http, target)
            t1 = time.perf_counter()
            tally.calls += 1
            tally.latencies.append(t1 - t0)
            tally.window_calls += t1 <= deadline

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    after = cpu_now(pids)
    tally.window_seconds += seconds
    tally.cpu.update({name: after[name] - before[name] for name in pids})


async def measure(targets: list[Target], pids: dict[str, int], args: argparse.Namespace
                  ) -> dict[int, dict[str, Tally]]:
    """Alternating slices per concurrency, the order rotated every round."""
    tallies: dict[int, dict[str, Tally]] = {}
    timeout = aiohttp.ClientTimeout(total=10)
    async with AsyncExitStack() as sessions:
        http = {t.name: await sessions.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.concurrency), timeout=timeout))
            for t in targets}
        for target in targets:  # warm pools, caches and connections alike
            for _ in range(args.warmup):
                await call(http[target.name], target)
            await run_slice(http[target.name], target, args.concurrency, args.slice, Tally(), {})
        rounds = max(1, round(args.seconds / args.slice))
        for concurrency in (1, args.concurrency):
            tallies[concurrency] = {t.name: Tally() for t in targets}
            for n in range(rounds):
                for target in targets[n % len(targets):] + targets[:n % len(targets)]:
                    await run_slice(http[target.name], target, concurrency, args.slice,
                                    tallies[concurrency][target.name], pids)
    return tallies


# -- the processes -----------------------------------------------------------------------------


def launch(name: str, command: list[str], env: dict[str, str], port: int, work: Path) -> Server:
    """A child on ``port`` whose output goes to a log file; waited for at ``/healthz``."""
    log = work / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=out)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    wait_healthy(server, timeout=60)
    return server


def uvicorn(factory: str, port: int) -> list[str]:
    """The command ``gatehouse up`` starts its children with."""
    return [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "3"]


def base_env() -> dict[str, str]:
    """This environment without any Gatehouse or OpenTelemetry setting of its own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEHOUSE_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def tracing_env(sink_url: str | None) -> dict[str, str]:
    if sink_url is None:
        return {}
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url, "OTEL_EXPORTER_OTLP_PROTOCOL":
            "http/protobuf", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_on"}


@dataclass(frozen=True)
class Keys:
    work: Path
    internal: Path  # Ed25519 private key; its public half beside it
    dev_issuer: Path
    token_keys: str


@contextmanager
def stack(db: Database, redis_url: str, keys: Keys, sink_url: str | None
          ) -> Iterator[tuple[Server, Server]]:
    """mcp_server, then the gateway, with ``gatehouse up``'s settings; stopped in reverse."""
    mcp_port, gateway_port = free_port(), free_port()
    public_url = f"http://127.0.0.1:{gateway_port}"
    env = {**base_env(), **tracing_env(sink_url),
           "GATEHOUSE_DATABASE_URL": db.app_url, "GATEHOUSE_REDIS_URL": redis_url,
           "GATEHOUSE_INTERNAL_KEY_FILE": str(keys.internal),
           "GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(keys.internal.with_suffix(".pub")),
           "GATEHOUSE_TOKEN_KEYS": keys.token_keys,
           "GATEHOUSE_ISSUER": devissuer.dev_issuer(public_url),
           "GATEHOUSE_JWKS_URL": devissuer.dev_jwks_url(public_url),
           "GATEHOUSE_DEV_ISSUER_KEY_FILE": str(keys.dev_issuer),
           "GATEHOUSE_PUBLIC_URL": public_url,
           "GATEHOUSE_MCP_SERVER_URL": f"http://127.0.0.1:{mcp_port}/mcp",
           "GATEHOUSE_USER_RATE_LIMIT": LIMIT}
    with ExitStack() as stop:
        mcp = launch("mcp_server", uvicorn("mcp_server.app:create_app", mcp_port), env,
                     mcp_port, keys.work)
        stop.callback(mcp.stop)
        gateway = launch("gateway", uvicorn("gateway.app:create_app", gateway_port), env,
                         gateway_port, keys.work)
        stop.callback(gateway.stop)
        yield mcp, gateway


def make_keys(work: Path) -> Keys:
    internal = work / "internal_assertion.pem"
    internal.with_suffix(".pub").write_bytes(public_pem(ensure_private_key_file(internal)))
    devissuer.ensure_key(work / "dev_issuer.pem")
    return Keys(work, internal, work / "dev_issuer.pem", generate_entry("bench"))


def targets_for(bare: Server, mcp: Server, gateway: Server, keys: Keys) -> list[Target]:
    signer = AssertionSigner(ensure_private_key_file(keys.internal), lifetime=30)
    user_token = devissuer.mint(
        devissuer.ensure_key(keys.dev_issuer), issuer=gateway.url + devissuer.ISSUER_PATH,
        audience=gateway.url + "/mcp", org=ORG, user=USER, roles=["member"])
    return [Target("bare", bare.url + "/mcp", None),
            Target("direct", mcp.url + "/mcp", AssertionSource(signer)),
            Target("gateway", gateway.url + "/mcp", lambda: user_token)]


def sink_stats(sink: Server) -> dict[str, int]:
    return dict(httpx.get(sink.url + "/stats", timeout=5).json())


# -- one tracing mode --------------------------------------------------------------------------


def run_mode(mode: str, db: Database, keys: Keys, bare: Server, sink: Server,
             args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack for ``mode``, measure, stop it; the figures as a JSON-able dict."""
    before = sink_stats(sink)
    with stack(db, args.redis_url, keys, sink.url if mode == "on" else None) as (mcp, gateway):
        pids = {"client": os.getpid(), "gateway": gateway.process.pid,
                "mcp_server": mcp.process.pid, "bare": bare.process.pid,
                "otlp_sink": sink.process.pid}
        targets = targets_for(bare, mcp, gateway, keys)
        budget = 6 * args.seconds * 3 + 120  # a hung server cannot hang the benchmark
        tallies = uvloop.run(asyncio.wait_for(measure(targets, pids, args), budget))
    after = sink_stats(sink)  # after the stop: a batch exporter flushes on shutdown
    received = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {**figures(mode, tallies, args.concurrency, received), "pids": pids}


def figures(mode: str, tallies: dict[int, dict[str, Tally]], c: int,
            received: dict[str, int]) -> dict[str, Any]:
    """Per target: ``busy`` is at ``--concurrency`` in flight, ``c1`` at one."""
    rows: dict[str, dict[str, Any]] = {}
    for name in TARGETS:
        busy, alone = tallies[c][name], tallies[1][name]
        rows[name] = {
            "rps_busy": busy.result(name, c).rps,
            "p50_ms_c1": alone.result(name, 1).percentile(0.5),
            "p99_ms_c1": alone.result(name, 1).percentile(0.99),
            "calls": {"c1": alone.calls, "busy": busy.calls},
            "cpu_us_per_call": {"c1": alone.cpu_us_per_call(), "busy": busy.cpu_us_per_call()},
        }
    return {"tracing": mode, "targets": rows, "ratios": ratios(rows),
            "otlp_received": received, "spans_exported": received.get("traces_requests", 0) > 0}


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    bare, direct, gateway = (rows[t] for t in TARGETS)

    def cpu(row: dict[str, Any], process: str, c: str = "busy") -> float:
        return float(row["cpu_us_per_call"][c][process])

    return {
        "throughput_gateway_over_bare": gateway["rps_busy"] / bare["rps_busy"],
        "added_p50_ms_gateway_minus_bare": gateway["p50_ms_c1"] - bare["p50_ms_c1"],
        "added_p50_ms_gateway_minus_direct": gateway["p50_ms_c1"] - direct["p50_ms_c1"],
        "gateway_cpu_us_per_call_busy": cpu(gateway, "gateway"),
        "gateway_cpu_us_per_call_c1": cpu(gateway, "gateway", "c1"),
        "mcp_server_cpu_vs_bare_pct_busy":
            100 * (cpu(direct, "mcp_server") / cpu(bare, "bare") - 1),
        "mcp_server_cpu_vs_bare_pct_c1":
            100 * (cpu(direct, "mcp_server", "c1") / cpu(bare, "bare", "c1") - 1),
    }


# -- the report --------------------------------------------------------------------------------


def table(result: dict[str, Any], c: int) -> str:
    shown = [p for p in PROCESSES if p != "otlp_sink" or result["tracing"] == "on"]
    left = f"{'target':<8} {f'req/s c={c}':>11} {'p50 ms c=1':>11} {'p99 ms c=1':>11}"
    lines = [" " * len(left) + f"   CPU µs per call, each process, at c={c} (at c=1)",
             left + "   " + "  ".join(f"{p:>15}" for p in shown)]
    for name, row in result["targets"].items():
        cpu = row["cpu_us_per_call"]
        cells = [f"{cpu['busy'][p]:7.0f} ({cpu['c1'][p]:5.0f})"
                 if p in INVOLVED[name] else f"{'-':>15}" for p in shown]
        lines.append(f"{name:<8} {row['rps_busy']:11.0f} {row['p50_ms_c1']:11.2f} "
                     f"{row['p99_ms_c1']:11.2f}   " + "  ".join(cells))
    return "\n".join(lines)


def summary(result: dict[str, Any], c: int) -> str:
    r = result["ratios"]
    return "\n".join([
        f"through-gateway / bare throughput at c={c}: "
        f"{r['throughput_gateway_over_bare']:.2f} (target >= 0.80)",
        f"added p50 at c=1: gateway - bare {r['added_p50_ms_gateway_minus_bare']:+.2f} ms "
        f"(target <= 1.00), gateway - direct {r['added_p50_ms_gateway_minus_direct']:+.2f} ms",
        f"gateway CPU per forwarded call: {r['gateway_cpu_us_per_call_busy']:.0f} µs at c={c}, "
        f"{r['gateway_cpu_us_per_call_c1']:.0f} µs at c=1 (target <= 400)",
        f"our mcp_server's CPU per echo vs bare FastMCP's: "
        f"{r['mcp_server_cpu_vs_bare_pct_busy']:+.1f}% at c={c}, "
        f"{r['mcp_server_cpu_vs_bare_pct_c1']:+.1f}% at c=1 (target within 15%)"])


def tracing_line(result: dict[str, Any]) -> str:
    if result["tracing"] == "off":
        return "tracing off: no OTEL_* variable in mcp_server's and the gateway's environment"
    got = result["otlp_received"]
    if not result["spans_exported"]:
        return ("tracing on (always_on, OTLP/HTTP to a loopback receiver): the receiver got no "
                "spans - tracing is not implemented yet, so these figures measure the same "
                "stack as 'off'")
    return (f"tracing on (always_on, OTLP/HTTP to a loopback receiver): "
            f"{got.get('traces_requests', 0)} exports, {got.get('traces_bytes', 0):,} bytes")


def report(results: list[dict[str, Any]], args: argparse.Namespace, out: Any) -> None:
    print(f"load average at start: {args.load_at_start}; other work on this machine makes "
          "every figure noisy (targets are interleaved, so it lands on all alike)", file=out)
    for result in results:
        print("", tracing_line(result), table(result, args.concurrency),
              summary(result, args.concurrency), sep="\n", file=out, flush=True)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5,
                        help="measured seconds per target, per concurrency, per tracing mode")
    parser.add_argument("--slice", type=float, default=0.5, help="one alternating slice")
    parser.add_argument("--tracing", choices=("off", "on", "both"), default="both")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=100, help="calls per target first")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("--redis-url", default=os.environ.get(
        "GATEHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = parser.parse_args(argv)
    if not 0 < args.slice <= 2:  # longer and idle keep-alive connections may be closed
        parser.error("--slice must be in (0, 2]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    os.environ.setdefault("GATEHOUSE_TEST_ADMIN_DATABASE_URL",
                          "postgresql://postgres@127.0.0.1/postgres")
    modes = ("off", "on") if args.tracing == "both" else (args.tracing,)
    work = Path(tempfile.mkdtemp(prefix="gatehouse-bench-overhead-"))
    keys = make_keys(work)
    with ExitStack() as stop, test_database() as db:
        bare_port, sink_port = free_port(), free_port()
        bare = launch("bare", uvicorn("loadtests.bare_fastmcp:create_app", bare_port),
                      base_env(), bare_port, work)
        stop.callback(bare.stop)
        sink = launch("otlp_sink", [sys.executable, "-m", "loadtests.otlp_sink", "--port",
                                    str(sink_port)], base_env(), sink_port, work)
        stop.callback(sink.stop)
        results = [run_mode(mode, db, keys, bare, sink, args) for mode in modes]
    report(results, args, sys.stderr if args.json else sys.stdout)
    if args.json:
        json.dump({"load_at_start": args.load_at_start, "concurrency": args.concurrency,
                   "seconds": args.seconds, "slice": args.slice, "modes": results},
                  sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
